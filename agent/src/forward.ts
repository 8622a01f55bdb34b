import {
  type Frame,
  FrameType,
  type InvalidFrame,
  MAX_DATA_CHUNK,
  ReceiveWindow,
  type RequestHeadFrame,
  type ResetCode,
  SendCredit,
} from "@burrow/protocol";
import type { ExchangeWatch, Observer } from "./inspector/observer.ts";
import type { Log } from "./log.ts";
import type { Origin, OriginExchange } from "./origin.ts";
import { isUpgrade, OriginSockets } from "./sockets.ts";

interface Stream {
  readonly id: number;
  readonly head: RequestHeadFrame;
  readonly startedAt: number;
  exchange: OriginExchange;
  status?: number;
  /** Response body bytes the relay accepts before it grants more. */
  readonly credit: SendCredit;
  /** Response body bytes from the origin waiting for credit. */
  queue: Uint8Array[];
  /** The origin finished; End follows the queue. */
  ended: boolean;
  /** Request body bytes from the relay: within its credit, credited back once the origin took them. */
  readonly window: ReceiveWindow;
  /** Response body bytes sent, for the request's log line. */
  sent: number;
  /** The inspector's view of this exchange, when it is on. */
  watch: ExchangeWatch | undefined;
}

/**
 * The agent's side of the HTTP streams on one relay connection: each RequestHead becomes a
 * request to the origin, and the origin's answer goes back as frames on the same stream id,
 * never more than the relay's credit ahead. A stalled visitor pauses the origin's response.
 */
export class Forwarder {
  private readonly streams = new Map<number, Stream>();
  private readonly sockets: OriginSockets;
  /** Warn once when the origin stops answering, not on every request. */
  private originDown = false;

  constructor(
    private readonly origin: Origin,
    private readonly send: (frame: Frame) => void,
    private readonly log: Log,
    private readonly observer?: Observer,
  ) {
    this.sockets = new OriginSockets(origin, send, log, observer);
  }

  /**
   * Handles a stream frame from the relay; returns false if it is not one of this forwarder's.
   * A frame that breaks the protocol, or that this code fails on, costs its own stream only:
   * that stream is reset, and every other stream on the connection carries on.
   */
  receive(frame: Frame | InvalidFrame): boolean {
    if (frame.type === "invalid") {
      this.reset(frame.stream, `the relay sent a frame that breaks the protocol (${frame.error.message})`);
      return true;
    }
    try {
      return this.handle(frame);
    } catch (error) {
      if (!("stream" in frame)) throw error;
      const type = Object.entries(FrameType).find(([, value]) => value === frame.type)?.[0] ?? frame.type;
      this.reset(frame.stream, `the agent failed on a ${type} frame (${(error as Error)?.message ?? error})`);
      return true;
    }
  }

  /** Abandons stream `id` on both sides, with one warning line. */
  private reset(id: number, message: string): void {
    const stream = this.streams.get(id);
    if (stream) {
      this.streams.delete(id);
      stream.exchange.abort();
      stream.watch?.fail("protocol-error", message);
    }
    this.sockets.abort(id);
    this.send({ type: FrameType.Reset, stream: id, code: "protocol-error", message: message.slice(0, 1000) });
    this.log.warn(`stream ${id}: ${message}; reset that stream`);
  }

  private handle(frame: Frame): boolean {
    if (this.sockets.receive(frame)) return true;
    switch (frame.type) {
      case FrameType.RequestHead:
        this.start(frame);
        return true;
      case FrameType.Data: {
        const stream = this.streams.get(frame.stream);
        if (!stream) return true;
        const overrun = stream.window.receive(frame.bytes.byteLength);
        if (overrun) {
          this.reset(stream.id, `the relay sent more request body than its credit allows (${overrun})`);
          return true;
        }
        stream.watch?.requestData(frame.bytes);
        stream.exchange.write(frame.bytes, () => this.flushed(stream, frame.bytes.byteLength));
        return true;
      }
      case FrameType.End: {
        const stream = this.streams.get(frame.stream);
        stream?.watch?.requestEnd();
        stream?.exchange.end();
        return true;
      }
      case FrameType.Credit: {
        const stream = this.streams.get(frame.stream);
        if (!stream) return false;
        const violation = stream.credit.grant(frame.bytes);
        if (violation) this.reset(stream.id, `the relay granted too much: ${violation}`);
        else this.pump(stream);
        return true;
      }
      case FrameType.Reset: {
        const stream = this.streams.get(frame.stream);
        if (!stream) return false;
        this.streams.delete(frame.stream);
        stream.exchange.abort();
        stream.watch?.fail("cancelled", "the relay reset the stream: the visitor went away");
        this.log.request(stream.head.method, stream.head.path, stream.status ?? "cancelled", stream.startedAt, stream.sent);
        return true;
      }
      default:
        return false;
    }
  }

  /** The connection to the relay is gone: abandon every request to the origin. */
  /** Requests and WebSockets in flight. */
  get open(): number {
    return this.streams.size + this.sockets.size;
  }

  abortAll(): void {
    this.sockets.abortAll();
    for (const stream of this.streams.values()) {
      stream.exchange.abort();
      stream.watch?.fail("cancelled", "the session with the relay ended");
    }
    this.streams.clear();
  }

  private start(head: RequestHeadFrame): void {
    const id = head.stream;
    if (this.streams.has(id) || this.sockets.has(id)) {
      this.send({ type: FrameType.Reset, stream: id, code: "protocol-error", message: `stream ${id} is already open` });
      return;
    }
    if (head.method.toUpperCase() === "CONNECT") {
      // CONNECT names a host to tunnel to (RFC 9110 section 9.3.6), not a path: node:http would
      // wait for a 'connect' that never comes, and the agent only ever talks to its own origin.
      this.send({
        type: FrameType.Reset,
        stream: id,
        code: "protocol-error",
        message: "CONNECT is not forwarded to the local server",
      });
      return;
    }
    if (isUpgrade(head)) {
      this.sockets.open(head);
      return;
    }
    const stream: Stream = {
      id,
      head,
      startedAt: performance.now(),
      exchange: undefined as unknown as OriginExchange,
      credit: new SendCredit(),
      queue: [],
      ended: false,
      window: new ReceiveWindow(),
      sent: 0,
      watch: this.observer?.exchange(head),
    };
    this.streams.set(id, stream);
    stream.exchange = this.origin.open(head.method, head.path, head.headers, {
      head: (status, headers) => {
        stream.status = status;
        this.originDown = false;
        stream.watch?.responseHead(status, headers);
        this.sendIfOpen(stream, { type: FrameType.ResponseHead, stream: id, status, headers });
      },
      data: (bytes) => {
        stream.watch?.responseData(bytes);
        stream.queue.push(bytes);
        this.pump(stream);
      },
      end: () => {
        stream.watch?.responseEnd();
        stream.ended = true;
        this.pump(stream);
      },
      fail: (code: ResetCode, message) => {
        stream.watch?.fail(code, message);
        if (!this.sendIfOpen(stream, { type: FrameType.Reset, stream: id, code, message })) return;
        this.streams.delete(id);
        this.log.request(
          head.method,
          head.path,
          stream.status ? `${stream.status} ${code}` : code,
          stream.startedAt,
          stream.sent,
        );
        if (code === "origin-unreachable" && !this.originDown) this.log.warn(message, "origin-unreachable");
        this.originDown ||= code === "origin-unreachable";
      },
    });
  }

  /** Sends queued response bytes while credit lasts; pauses the origin when it runs out. */
  private pump(stream: Stream): void {
    while (stream.queue.length > 0 && stream.credit.available > 0) {
      const chunk = stream.queue[0]!;
      const size = stream.credit.take(Math.min(chunk.byteLength, MAX_DATA_CHUNK));
      if (!this.sendIfOpen(stream, { type: FrameType.Data, stream: stream.id, bytes: chunk.subarray(0, size) })) return;
      stream.sent += size;
      if (size === chunk.byteLength) stream.queue.shift();
      else stream.queue[0] = chunk.subarray(size);
    }
    if (stream.queue.length > 0) {
      stream.exchange.pause();
    } else if (stream.ended) {
      if (!this.sendIfOpen(stream, { type: FrameType.End, stream: stream.id })) return;
      this.streams.delete(stream.id);
      this.log.request(stream.head.method, stream.head.path, stream.status ?? 0, stream.startedAt, stream.sent);
    } else {
      stream.exchange.resume();
    }
  }

  /** The origin took `bytes` more of the request body: credit the relay in batches. */
  private flushed(stream: Stream, bytes: number): void {
    const credit = stream.window.consume(bytes);
    if (credit > 0) this.sendIfOpen(stream, { type: FrameType.Credit, stream: stream.id, bytes: credit });
  }

  /** Sends a frame for a stream the relay has not reset; returns whether it was sent. */
  private sendIfOpen(stream: Stream, frame: Frame): boolean {
    if (this.streams.get(stream.id) !== stream) return false;
    this.send(frame);
    return true;
  }
}
