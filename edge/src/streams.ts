import type { ResetCode, ResponseHeadFrame } from "@burrow/protocol";
import { EdgeError, type EdgeErrorCode } from "./errors.ts";
import { responseHeaders } from "./headers.ts";

// Statuses whose responses never carry a body (Fetch standard, "null body status").
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);

/** A visitor request in flight on the agent's socket. */
interface Stream {
  readonly socket: WebSocket;
  readonly method: string;
  resolve(response: Response): void;
  timer: ReturnType<typeof setTimeout> | null;
  /** Set once the response head arrived and the body is streaming to the visitor. */
  writer?: WritableStreamDefaultWriter<Uint8Array>;
}

/** Why a stream went away, as the agent hears it in a Reset frame. */
export type OnCancel = (id: number, socket: WebSocket, code: ResetCode, message: string) => void;

/**
 * The visitor side of each stream: stream id -> the pending Response, then the writer that
 * feeds its body. Lives in memory only; a Durable Object never hibernates while one is open.
 */
export class StreamTable {
  private readonly streams = new Map<number, Stream>();
  // Random start so ids do not repeat across hibernation wake-ups of the same connection.
  private next = 1 + Math.floor(Math.random() * 0x7fff_ffff);

  constructor(private readonly onCancel: OnCancel) {}

  get size(): number {
    return this.streams.size;
  }

  has(id: number): boolean {
    return this.streams.has(id);
  }

  /** Registers a new stream and returns its id with the promise of the visitor's Response. */
  open(socket: WebSocket, method: string): { id: number; response: Promise<Response> } {
    const id = this.next;
    this.next = this.next >= 0xffff_fffe ? 1 : this.next + 1;
    const response = new Promise<Response>((resolve) => {
      this.streams.set(id, { socket, method, resolve, timer: null });
    });
    return { id, response };
  }

  /**
   * Starts the wait for the response head, once the visitor's body has been passed on: an
   * upload that takes long is not the agent being slow. Without a head within `timeoutMs`, the
   * visitor gets a 504 page and the agent a Reset.
   */
  awaitHead(id: number, timeoutMs: number, tunnel: string): void {
    const stream = this.streams.get(id);
    if (!stream || stream.writer) return;
    stream.timer = setTimeout(() => {
      this.fail(id, 504, "agent-timeout", `The agent for tunnel "${tunnel}" did not answer within ${timeoutMs / 1000}s.`);
      this.onCancel(id, stream.socket, "cancelled", "the relay gave up waiting for a response head");
    }, timeoutMs);
  }

  /** The agent answered: start the visitor's response. Returns false for an unknown stream. */
  head(frame: ResponseHeadFrame): boolean {
    const stream = this.streams.get(frame.stream);
    if (!stream || stream.writer) return false;
    clearTimeout(stream.timer);
    const headers = responseHeaders(frame.headers);
    if (NULL_BODY_STATUS.has(frame.status) || stream.method === "HEAD") {
      this.streams.delete(frame.stream);
      stream.resolve(new Response(null, { status: frame.status, headers }));
      return true;
    }
    // A declared length makes the runtime send Content-Length and fail the response if the
    // agent ends early: a truncated body is never delivered as a clean end.
    const length = Number(headers.get("content-length") ?? Number.NaN);
    const { readable, writable } =
      Number.isSafeInteger(length) && length >= 0 ? new FixedLengthStream(length) : new IdentityTransformStream();
    stream.writer = writable.getWriter();
    // `encodeBody: "manual"`: the origin's bytes are already encoded as its Content-Encoding
    // says; without it the runtime would compress them a second time.
    stream.resolve(new Response(readable, { status: frame.status, headers, encodeBody: "manual" }));
    return true;
  }

  /** A body chunk for the visitor. Returns false for an unknown stream or one without a head. */
  data(id: number, bytes: Uint8Array): boolean {
    const stream = this.streams.get(id);
    if (!stream?.writer) return false;
    stream.writer.write(bytes).catch(() => this.cancel(id, "the visitor went away"));
    return true;
  }

  /** The body is complete. */
  end(id: number): boolean {
    const stream = this.streams.get(id);
    if (!stream?.writer) return false;
    this.streams.delete(id);
    stream.writer.close().catch(() => {});
    return true;
  }

  /** The agent reset the stream: a 502 page before the head, a failed body after it. */
  reset(id: number, code: string, message: string): boolean {
    const stream = this.streams.get(id);
    if (!stream) return false;
    const page: EdgeErrorCode =
      code === "origin-unreachable" ? "origin-unreachable" : code === "origin-error" ? "origin-error" : "stream-reset";
    this.fail(id, 502, page, message);
    return true;
  }

  /** Fails every stream carried by `socket` (it closed, or another connection replaced it). */
  failSocket(socket: WebSocket, status: number, code: EdgeErrorCode, message: string): void {
    for (const [id, stream] of this.streams) {
      if (stream.socket === socket) this.fail(id, status, code, message);
    }
  }

  private fail(id: number, status: number, code: EdgeErrorCode, message: string): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.streams.delete(id);
    clearTimeout(stream.timer);
    if (stream.writer) {
      // The head is already sent: abort so the visitor sees a broken response, not a short one.
      stream.writer.abort(new Error(`${code}: ${message}`)).catch(() => {});
    } else {
      stream.resolve(new EdgeError(status, code, message).toResponse());
    }
  }

  private cancel(id: number, why: string): void {
    const stream = this.streams.get(id);
    if (!stream) return;
    this.streams.delete(id);
    clearTimeout(stream.timer);
    this.onCancel(id, stream.socket, "cancelled", why);
  }
}
