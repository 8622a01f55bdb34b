import { type Frame, FrameType, MAX_DATA_CHUNK, type RequestHeadFrame, type ResetCode } from "@burrow/protocol";
import type { Log } from "./log.ts";
import type { Origin, OriginExchange } from "./origin.ts";

interface Stream {
  exchange: OriginExchange;
  head: RequestHeadFrame;
  startedAt: number;
  status?: number;
}

/**
 * The agent's side of the streams on one relay connection: each RequestHead becomes a request
 * to the origin, and the origin's answer goes back as frames on the same stream id.
 */
export class Forwarder {
  private readonly streams = new Map<number, Stream>();
  /** Warn once when the origin stops answering, not on every request. */
  private originDown = false;

  constructor(
    private readonly origin: Origin,
    private readonly send: (frame: Frame) => void,
    private readonly log: Log,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /** Handles a stream frame from the relay. Frames for unknown streams are dropped. */
  receive(frame: Frame): void {
    switch (frame.type) {
      case FrameType.RequestHead:
        this.start(frame);
        return;
      case FrameType.Data:
        this.streams.get(frame.stream)?.exchange.write(frame.bytes);
        return;
      case FrameType.End:
        this.streams.get(frame.stream)?.exchange.end();
        return;
      case FrameType.Reset: {
        const stream = this.streams.get(frame.stream);
        if (!stream) return;
        this.streams.delete(frame.stream);
        stream.exchange.abort();
        this.log.request(stream.head.method, stream.head.path, stream.status ?? "cancelled", stream.startedAt);
        return;
      }
      default:
        this.log.debug(`ignored a frame of type ${frame.type} from the relay`);
    }
  }

  /** The connection to the relay is gone: abandon every request to the origin. */
  abortAll(): void {
    for (const stream of this.streams.values()) stream.exchange.abort();
    this.streams.clear();
  }

  private start(head: RequestHeadFrame): void {
    const id = head.stream;
    if (this.streams.has(id)) {
      this.send({ type: FrameType.Reset, stream: id, code: "protocol-error", message: `stream ${id} is already open` });
      return;
    }
    const stream: Stream = { head, startedAt: performance.now(), exchange: undefined as unknown as OriginExchange };
    this.streams.set(id, stream);
    stream.exchange = this.origin.open(head.method, head.path, head.headers, {
      head: (status, headers) => {
        stream.status = status;
        this.originDown = false;
        this.sendIfOpen(id, { type: FrameType.ResponseHead, stream: id, status, headers });
      },
      data: (bytes) => {
        for (let offset = 0; offset < bytes.byteLength; offset += MAX_DATA_CHUNK) {
          this.sendIfOpen(id, { type: FrameType.Data, stream: id, bytes: bytes.subarray(offset, offset + MAX_DATA_CHUNK) });
        }
      },
      end: () => {
        if (!this.sendIfOpen(id, { type: FrameType.End, stream: id })) return;
        this.streams.delete(id);
        this.log.request(head.method, head.path, stream.status ?? 0, stream.startedAt);
      },
      fail: (code: ResetCode, message) => {
        if (!this.sendIfOpen(id, { type: FrameType.Reset, stream: id, code, message })) return;
        this.streams.delete(id);
        this.log.request(head.method, head.path, stream.status ? `${stream.status} ${code}` : code, stream.startedAt);
        if (code === "origin-unreachable" && !this.originDown) this.log.warn(message);
        this.originDown ||= code === "origin-unreachable";
      },
    });
  }

  /** Sends a frame for a stream the relay has not reset; returns whether it was sent. */
  private sendIfOpen(id: number, frame: Frame): boolean {
    if (!this.streams.has(id)) return false;
    this.send(frame);
    return true;
  }
}
