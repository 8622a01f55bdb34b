import {
  concatBytes,
  type Frame,
  FrameType,
  type HeaderList,
  MAX_DATA_CHUNK,
  ReceiveWindow,
  type ResponseHeadFrame,
  SendCredit,
} from "@burrow/protocol";
import { bytesReader, chunkReader } from "./body-readers.ts";
import { EdgeError, type EdgeErrorCode, isTeardownNoise } from "./errors.ts";
import { HeadDeadlines } from "./head-deadlines.ts";
import { responseHeaders } from "./headers.ts";
import type { TunnelHost } from "./host.ts";
import type { AgentSession } from "./session.ts";
import { Tally } from "./shares.ts";

// Statuses whose responses never carry a body (Fetch standard, "null body status").
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);

/**
 * What a frame from the agent meant for its stream: applied, for a stream that is gone (the
 * visitor left, or it never existed: the agent may be catching up with a Reset), or a breach of
 * the protocol by the agent, which resets that stream.
 */
export type Verdict = "ok" | "gone" | { violation: string };

/** A visitor request in flight on the agent's socket. */
interface Stream {
  readonly socket: AgentSession;
  readonly method: string;
  /** The visitor asked for a WebSocket; a 101 answer hands the stream to `upgrade`. */
  readonly upgrade: boolean;
  /** The tunnel's host on the base domain, the widest a cookie it sets may be ("": none). */
  readonly cookieHost: string;
  /** Whom it counts for (see visitorKey). */
  readonly visitor: string | undefined;
  resolve(response: Response): void;
  /** Request body bytes the agent still accepts before it grants more. */
  readonly credit: SendCredit;
  /** Wakes the request body pump when credit arrives or the stream ends. */
  wake?: () => void;
  /** Response body bytes from the agent: within its credit, credited back once the visitor took them. */
  readonly window: ReceiveWindow;
  /** Set once the response head arrived and the body is streaming to the visitor. */
  writer?: WritableStreamDefaultWriter<Uint8Array>;
  /**
   * The response head and the body so far, while the message that brought the head is being
   * read: a response whose End is in the same message goes out whole (see settle).
   */
  pending?: { status: number; headers: HeaderList; contentLength: string | undefined; chunks: Uint8Array[]; size: number };
}

/** Sends a frame to the agent on `socket`; never throws. */
export type SendFrame = (socket: AgentSession, frame: Frame) => void;

/** Turns an accepted WebSocket upgrade into the visitor's 101 response. */
export type Upgrade = (id: number, protocol: string | null, visitor: string | undefined) => Response;

/**
 * The visitor side of each HTTP stream: stream id -> the pending Response, then the writer that
 * feeds its body, with flow control both ways. Lives in memory only; a Durable Object does not
 * hibernate while a request is in flight.
 */
export class StreamTable {
  private readonly streams = new Map<number, Stream>();
  /** The streams each visitor holds (see shares.ts). */
  private readonly held = new Tally();
  /** Streams waiting for their response head (see awaitHead). */
  private readonly deadlines = new HeadDeadlines(
    (id) => this.waitsForHead(id),
    (id, tunnel, timeoutMs) => this.late(id, tunnel, timeoutMs),
    (id) => this.abandon(id, "the visitor went away"),
  );
  /** Streams whose head came in the message being read (see settle). */
  private unsettled: number[] = [];

  constructor(
    private readonly host: Pick<TunnelHost, "streamingResponse" | "wholeResponse">,
    private readonly send: SendFrame,
    private readonly upgrade: Upgrade,
  ) {}

  has(id: number): boolean {
    return this.streams.has(id);
  }

  /** Requests in flight (for the per-tunnel limit). */
  get size(): number {
    return this.streams.size;
  }

  /** Requests in flight of one visitor (for its share). */
  heldBy(visitor: string | undefined): number {
    return this.held.of(visitor);
  }

  /** Registers stream `id`, held by `visitor`, and returns the promise of the visitor's Response. */
  open(
    id: number,
    socket: AgentSession,
    method: string,
    upgrade: boolean,
    cookieHost: string,
    visitor: string | undefined,
  ): Promise<Response> {
    this.held.add(visitor);
    return new Promise<Response>((resolve) => {
      this.streams.set(id, {
        socket,
        method,
        upgrade,
        cookieHost,
        visitor,
        resolve,
        credit: new SendCredit(),
        window: new ReceiveWindow(),
      });
    });
  }

  /**
   * Streams the visitor's request body to the agent in bounded Data frames, never more than
   * the agent's credit ahead, then End. Resolves when done or when the stream went away.
   */
  async forwardBody(id: number, body: ReadableStream<Uint8Array> | Uint8Array | null): Promise<void> {
    const reader = body instanceof Uint8Array ? bytesReader(body) : body ? chunkReader(body) : undefined;
    try {
      while (reader) {
        const value = await reader.read();
        if (!value) break;
        for (let offset = 0; offset < value.byteLength; ) {
          const allowed = await this.credit(id, Math.min(MAX_DATA_CHUNK, value.byteLength - offset));
          if (!allowed) {
            await reader.cancel();
            return;
          }
          const stream = this.streams.get(id)!;
          this.send(stream.socket, { type: FrameType.Data, stream: id, bytes: value.subarray(offset, offset + allowed) });
          offset += allowed;
        }
      }
      const stream = this.streams.get(id);
      if (stream) this.send(stream.socket, { type: FrameType.End, stream: id });
    } catch (error) {
      if (!isTeardownNoise(error)) console.error(`stream ${id}: reading the visitor's body failed`, error);
      this.cancel(id, "the visitor's request body broke off");
    }
  }

  /**
   * Waits until the agent accepts at least one byte and its session takes input (see
   * AgentSession.takesInput: not during a cut); returns how many of `want` it may take (0:
   * stream gone). The body is not read meanwhile, so the visitor waits on TCP backpressure.
   */
  private async credit(id: number, want: number): Promise<number> {
    for (;;) {
      const stream = this.streams.get(id);
      if (!stream) return 0;
      const open = stream.socket.takesInput;
      const allowed = open ? stream.credit.take(want) : 0;
      if (allowed > 0) return allowed;
      await new Promise<void>((resolve) => {
        stream.wake = resolve;
        if (!open) stream.socket.whenTakesInput(resolve);
      });
    }
  }

  /** The agent consumed more of the request body. */
  granted(id: number, socket: AgentSession, bytes: number): Verdict {
    const stream = this.streams.get(id);
    if (stream?.socket !== socket) return "gone";
    const violation = stream.credit.grant(bytes);
    if (violation) return { violation };
    stream.wake?.();
    stream.wake = undefined;
    return "ok";
  }

  /**
   * Starts the wait for the response head, once the visitor's body has been passed on: an
   * upload that takes long is not the agent being slow. Without a head within `timeoutMs`, the
   * visitor gets a 504 page and the agent a Reset; a visitor who leaves meanwhile (`signal`)
   * has the agent abort the origin's request (see HeadDeadlines).
   */
  awaitHead(id: number, timeoutMs: number, tunnel: string, signal: AbortSignal | undefined): void {
    const stream = this.streams.get(id);
    if (!stream || stream.writer || stream.pending) return;
    this.deadlines.add(id, timeoutMs, tunnel, signal);
  }

  /** Whether stream `id` still waits for its response head. */
  private waitsForHead(id: number): boolean {
    const stream = this.streams.get(id);
    return stream !== undefined && !stream.writer && !stream.pending;
  }

  /** Stream `id` had no response head within `timeoutMs`. */
  private late(id: number, tunnel: string, timeoutMs: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.send(stream.socket, { type: FrameType.Reset, stream: id, code: "cancelled", message: "no response head in time" });
    this.fail(id, 504, "agent-timeout", `The agent for tunnel "${tunnel}" did not answer within ${timeoutMs / 1000}s.`);
  }

  /** The agent answered: start the visitor's response. */
  head(frame: ResponseHeadFrame, socket: AgentSession): Verdict {
    const stream = this.streams.get(frame.stream);
    if (stream?.socket !== socket) return "gone";
    if (stream.writer || stream.pending) return { violation: "a second response head" };
    this.deadlines.delete(frame.stream);
    const { headers, contentLength } = responseHeaders(frame.headers, stream.cookieHost);
    if (frame.status === 101) {
      this.forget(frame.stream);
      const protocol = headers.find(([name]) => name.toLowerCase() === "sec-websocket-protocol")?.[1] ?? null;
      if (stream.upgrade) stream.resolve(this.upgrade(frame.stream, protocol, stream.visitor));
      else
        stream.resolve(
          new EdgeError(502, "stream-reset", "The agent answered 101 to a request that asked for no upgrade.").toResponse(),
        );
      return "ok";
    }
    if (NULL_BODY_STATUS.has(frame.status) || stream.method === "HEAD") {
      this.remove(frame.stream);
      stream.wake?.();
      stream.resolve(new Response(null, { status: frame.status, headers }));
      return "ok";
    }
    stream.pending = { status: frame.status, headers, contentLength, chunks: [], size: 0 };
    this.unsettled.push(frame.stream);
    return "ok";
  }

  /**
   * The message from the agent has been read. A response it carried whole (head, body and End:
   * every small one) was answered as one Response with its body in hand; the others start
   * streaming their body now. A Response whose body is a stream costs the relay a stream pair,
   * a writer and a promise per chunk: about a fifth of its CPU per small request (bench/profile.ts).
   */
  settle(): void {
    for (const id of this.unsettled) {
      const stream = this.streams.get(id);
      if (stream?.pending) this.stream(id, stream);
    }
    this.unsettled = [];
  }

  /** The response's body streams to the visitor from here, starting with what came with its head. */
  private stream(id: number, stream: Stream): void {
    const { status, headers, contentLength, chunks } = stream.pending!;
    stream.pending = undefined;
    // A declared length makes the host send Content-Length and fail the response if the agent
    // ends early: a truncated body is never delivered as a clean end.
    const length = Number(contentLength ?? Number.NaN);
    const { response, writable } = this.host.streamingResponse(
      status,
      new Headers(headers),
      Number.isSafeInteger(length) && length >= 0 ? length : undefined,
    );
    const writer = writable.getWriter();
    stream.writer = writer;
    // Fires when the visitor goes away, even while the origin is sending nothing.
    writer.closed.catch(() => this.cancel(id, "the visitor went away"));
    stream.resolve(response);
    for (const chunk of chunks) this.write(id, stream, chunk);
  }

  /**
   * A body chunk for the visitor. The write settles once the visitor's connection took the
   * bytes, and only then does the agent get credit for them: a slow visitor slows the origin
   * instead of filling the relay's memory. An agent that sends more than its credit breaks
   * the protocol (the relay would have to buffer what it never allowed).
   */
  data(id: number, socket: AgentSession, bytes: Uint8Array): Verdict {
    const stream = this.streams.get(id);
    if (stream?.socket !== socket) return "gone";
    if (!stream.writer && !stream.pending) return { violation: "body data before the response head" };
    const overrun = stream.window.receive(bytes.byteLength);
    if (overrun) return { violation: `more response body than its credit allows (${overrun})` };
    if (stream.pending) {
      stream.pending.chunks.push(bytes);
      stream.pending.size += bytes.byteLength;
    } else {
      this.write(id, stream, bytes);
    }
    return "ok";
  }

  private write(id: number, stream: Stream, bytes: Uint8Array): void {
    stream.writer!.write(bytes).then(
      () => {
        const credit = stream.window.consume(bytes.byteLength);
        if (credit > 0 && this.streams.has(id)) this.send(stream.socket, { type: FrameType.Credit, stream: id, bytes: credit });
      },
      () => this.cancel(id, "the visitor went away"),
    );
  }

  /** The body is complete. */
  end(id: number, socket: AgentSession): Verdict {
    const stream = this.streams.get(id);
    if (stream?.socket !== socket) return "gone";
    if (!stream.writer && !stream.pending) return { violation: "End before the response head" };
    const whole = stream.pending;
    if (whole && Number(whole.contentLength ?? whole.size) === whole.size) {
      this.remove(id);
      const body = whole.chunks.length === 1 ? whole.chunks[0]! : concatBytes(whole.chunks, whole.size);
      stream.resolve(this.host.wholeResponse(whole.status, new Headers(whole.headers), body));
      return "ok";
    }
    // Not the length it declared: streamed, so the runtime fails it as it would any short body.
    if (whole) this.stream(id, stream);
    this.remove(id);
    stream.writer!.close().catch(() => {});
    return "ok";
  }

  /**
   * The agent broke the protocol on this stream: the visitor gets a 502 (or a broken body), the
   * agent a Reset, and no other stream is touched.
   */
  violated(id: number, why: string): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.send(stream.socket, { type: FrameType.Reset, stream: id, code: "protocol-error", message: why });
    this.fail(id, 502, "stream-reset", `The agent broke the protocol on this request (${why}).`);
  }

  /** The agent reset the stream: a 502 page before the head, a failed body after it. */
  reset(id: number, socket: AgentSession, code: string, message: string): void {
    if (this.streams.get(id)?.socket !== socket) return;
    const page: EdgeErrorCode =
      code === "origin-unreachable" ? "origin-unreachable" : code === "origin-error" ? "origin-error" : "stream-reset";
    this.fail(id, 502, page, message);
  }

  /** Fails every stream carried by `socket` (it closed, or another connection replaced it). */
  failSocket(socket: AgentSession, status: number, code: EdgeErrorCode, message: string): void {
    for (const [id, stream] of this.streams) {
      if (stream.socket === socket) this.fail(id, status, code, message);
    }
  }

  private fail(id: number, status: number, code: EdgeErrorCode, message: string): void {
    const stream = this.forget(id);
    if (!stream) return;
    // A head that came in this message is sent with a broken body, as if it had gone out already.
    if (stream.pending) this.stream(id, stream);
    if (stream.writer) {
      // The head is already sent: abort so the visitor sees a broken response, not a short one.
      stream.writer.abort(new Error(`${code}: ${message}`)).catch(() => {});
    } else {
      stream.resolve(new EdgeError(status, code, message).toResponse());
    }
  }

  /** The visitor left before the response started: the agent aborts its request to the origin. */
  abandon(id: number, why: string): void {
    if (!this.streams.get(id)?.writer) this.cancel(id, why);
  }

  /** The visitor side gave up: tell the agent, which aborts its request to the origin. */
  private cancel(id: number, why: string): void {
    const stream = this.forget(id);
    if (!stream) return;
    this.send(stream.socket, { type: FrameType.Reset, stream: id, code: "cancelled", message: why });
    if (!stream.writer) stream.resolve(new EdgeError(502, "stream-reset", why).toResponse());
  }

  /** The stream is done: its visitor holds one fewer. */
  private remove(id: number): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.streams.delete(id);
    this.held.remove(stream.visitor);
  }

  private forget(id: number): Stream | undefined {
    const stream = this.streams.get(id);
    if (!stream) return undefined;
    this.remove(id);
    this.deadlines.delete(id);
    stream.wake?.();
    return stream;
  }
}
