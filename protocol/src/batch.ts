import { encodeDataHeader, encodeFrame } from "./codec.ts";
import { type Frame, FrameType } from "./frames.ts";
import { BATCH_FLUSH_BYTES, MAX_MESSAGE_BYTES } from "./limits.ts";

/**
 * Coalesces the frames a side sends in one turn into one WebSocket message: a small response
 * (ResponseHead, Data, End) costs the relay one message event instead of three, and small
 * frames never wait behind each other for a TCP acknowledgement. Order is kept. A batch goes
 * out once it holds BATCH_FLUSH_BYTES, so bulk data is not delayed or copied much: a Data
 * frame's payload is not copied here but handed to `write` as one of the message's parts, and
 * must not change until then (the runtimes' socket and stream reads hand out fresh buffers).
 */
export class FrameBatch {
  private parts: Uint8Array[] = [];
  private size = 0;
  private frames = 0;
  private scheduled = false;

  /**
   * @param write sends one binary message made of `parts` in order, `size` bytes in all, holding
   *   `frames` frames (may throw if the socket is closed); {@link concatBytes} joins them where
   *   one buffer is needed.
   * @param schedule runs the flush later in this turn (a microtask, or setImmediate).
   */
  constructor(
    private readonly write: (parts: Uint8Array[], size: number, frames: number) => void,
    private readonly schedule: (flush: () => void) => void,
  ) {}

  /**
   * Queues a frame.
   * @throws {ProtocolError} as {@link encodeFrame} does.
   */
  push(frame: Frame): void {
    const head = frame.type === FrameType.Data ? encodeDataHeader(frame.stream, frame.bytes.byteLength) : encodeFrame(frame);
    const payload = frame.type === FrameType.Data ? frame.bytes : undefined;
    const size = head.byteLength + (payload?.byteLength ?? 0);
    if (this.size + size > MAX_MESSAGE_BYTES) this.flush();
    this.parts.push(head);
    if (payload) this.parts.push(payload);
    this.size += size;
    this.frames++;
    if (this.size >= BATCH_FLUSH_BYTES) {
      this.flush();
    } else if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(() => {
        this.scheduled = false;
        this.flush();
      });
    }
  }

  /** Frames queued for the next message. */
  get queued(): number {
    return this.frames;
  }

  /** True when nothing is queued: the next frame starts a message. */
  get empty(): boolean {
    return this.parts.length === 0;
  }

  /** Sends what is queued now. */
  flush(): void {
    if (this.parts.length === 0) return;
    const { parts, size, frames } = this;
    this.parts = [];
    this.size = 0;
    this.frames = 0;
    this.write(parts, size, frames);
  }
}

/** Joins byte arrays whose lengths add up to `size` into one. */
export function concatBytes(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}
