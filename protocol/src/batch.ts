import { encodeDataHeader, encodeFrame } from "./codec.ts";
import { type Frame, FrameType } from "./frames.ts";
import { BATCH_FLUSH_BYTES, MAX_MESSAGE_BYTES } from "./limits.ts";

/** A Data frame smaller than this, queued right after one of the same stream, joins it (see push). */
const JOIN_DATA_BELOW = 1024;
/** A joined Data frame grows to this at most. */
const JOINED_DATA_MAX = 16 * 1024;

/** The last frame queued, while it is a small Data frame later ones may join. */
interface Tail {
  stream: number;
  /** Where its header is in `parts`; its payload is the part after it. */
  at: number;
  /** Its payload: the sender's own buffer, until a second chunk joins it and it is copied here. */
  buffer: Uint8Array;
  length: number;
  owned: boolean;
}

/**
 * Coalesces the frames a side sends in one turn into one WebSocket message: a small response
 * (ResponseHead, Data, End) costs the relay one message event instead of three, and small
 * frames never wait behind each other for a TCP acknowledgement. Order is kept. A batch goes
 * out once it holds BATCH_FLUSH_BYTES, so bulk data is not delayed or copied much: a Data
 * frame's payload is not copied here but handed to `write` as one of the message's parts, and
 * must not change until then (the runtimes' socket and stream reads hand out fresh buffers);
 * only tiny chunks of one stream in a row are copied, into one frame (see join).
 */
export class FrameBatch {
  private parts: Uint8Array[] = [];
  private size = 0;
  private frames = 0;
  private scheduled = false;
  private tail: Tail | undefined;

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
    if (frame.type === FrameType.Data && this.join(frame.stream, frame.bytes)) return;
    this.tail = undefined;
    const head = frame.type === FrameType.Data ? encodeDataHeader(frame.stream, frame.bytes.byteLength) : encodeFrame(frame);
    const payload = frame.type === FrameType.Data ? frame.bytes : undefined;
    const size = head.byteLength + (payload?.byteLength ?? 0);
    if (this.size + size > MAX_MESSAGE_BYTES) this.flush();
    this.parts.push(head);
    if (payload) this.parts.push(payload);
    this.size += size;
    this.frames++;
    if (frame.type === FrameType.Data && frame.bytes.byteLength < JOIN_DATA_BELOW) {
      const { stream, bytes } = frame;
      this.tail = { stream, at: this.parts.length - 2, buffer: bytes, length: bytes.byteLength, owned: false };
    }
    this.after();
  }

  /**
   * Appends a small body chunk to the Data frame of the same stream queued just before it: a
   * visitor or origin that sends tiny chunks faster than the batch is flushed costs one frame,
   * not one a chunk (every frame is kept until the peer acknowledges it, and that is bounded,
   * see unackedLimit). The payload is copied into a buffer of this batch's own, grown by
   * doubling, so the sender's buffers are not touched.
   */
  private join(stream: number, bytes: Uint8Array): boolean {
    const tail = this.tail;
    const length = (tail?.length ?? 0) + bytes.byteLength;
    if (!tail || tail.stream !== stream || bytes.byteLength >= JOIN_DATA_BELOW || length > JOINED_DATA_MAX) return false;
    if (this.size + bytes.byteLength > MAX_MESSAGE_BYTES) return false;
    if (!tail.owned || length > tail.buffer.byteLength) {
      const grown = new Uint8Array(Math.min(JOINED_DATA_MAX, Math.max(2 * length, 64)));
      grown.set(tail.buffer.subarray(0, tail.length));
      tail.buffer = grown;
      tail.owned = true;
    }
    tail.buffer.set(bytes, tail.length);
    tail.length = length;
    this.parts[tail.at] = encodeDataHeader(stream, length);
    this.parts[tail.at + 1] = tail.buffer.subarray(0, length);
    this.size += bytes.byteLength;
    this.after();
    return true;
  }

  /** Flushes a full batch, or schedules the flush of a new one. */
  private after(): void {
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
    this.tail = undefined;
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
