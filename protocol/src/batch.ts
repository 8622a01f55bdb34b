import { encodeFrame } from "./codec.ts";
import type { Frame } from "./frames.ts";
import { BATCH_FLUSH_BYTES, MAX_MESSAGE_BYTES } from "./limits.ts";

/**
 * Coalesces the frames a side sends in one turn into one WebSocket message: a small response
 * (ResponseHead, Data, End) costs the relay one message event instead of three, and small
 * frames never wait behind each other for a TCP acknowledgement. Order is kept. A batch goes
 * out once it holds BATCH_FLUSH_BYTES, so bulk data is not delayed or copied much.
 */
export class FrameBatch {
  private parts: Uint8Array[] = [];
  private size = 0;
  private scheduled = false;

  /**
   * @param write sends one binary message (may throw if the socket is closed).
   * @param schedule runs the flush later in this turn (a microtask, or setImmediate).
   */
  constructor(
    private readonly write: (message: Uint8Array) => void,
    private readonly schedule: (flush: () => void) => void,
  ) {}

  /**
   * Queues a frame.
   * @throws {ProtocolError} as {@link encodeFrame} does.
   */
  push(frame: Frame): void {
    const bytes = encodeFrame(frame);
    if (this.size + bytes.byteLength > MAX_MESSAGE_BYTES) this.flush();
    this.parts.push(bytes);
    this.size += bytes.byteLength;
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

  /** Sends what is queued now. */
  flush(): void {
    if (this.parts.length === 0) return;
    const parts = this.parts;
    const message = parts.length === 1 ? parts[0]! : concatBytes(parts, this.size);
    this.parts = [];
    this.size = 0;
    this.write(message);
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
