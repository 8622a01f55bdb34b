import { CloseCode, concatBytes, encodePollAnswer, MAX_MESSAGE_BYTES, MAX_POLL_WAIT_MS, randomId } from "@burrow/protocol";
import { EdgeError } from "./errors.ts";
import type { Link } from "./host.ts";
import { cancelTimer } from "./timers.ts";

/**
 * After an answered poll the agent's next one is due at once (or after a reconnect through its
 * proxy); without one for this long, the agent is gone. workerd does not tell a Durable Object
 * that a waiting poll's client went away, so a dead agent is noticed within its poll wait plus this.
 */
const SESSION_IDLE_MS = 8_000;
/** A poll's connection closed before its answer (a proxy cut it, or the agent died): this long to poll again. */
const RECONNECT_GRACE_MS = 5_000;
/** How long a closed session waits for the agent's next poll to hear why. */
const CLOSE_LINGER_MS = 5_000;

const HEADERS = { "Content-Type": "application/octet-stream", "Cache-Control": "no-store" };

/**
 * The relay side of the HTTPS transport: an agent link made of requests. Frames for the agent
 * queue here until its long poll collects them; each batch is numbered and kept until the
 * next poll acknowledges it, so a batch a proxy cut off is sent again. A waiting poll gets its
 * head at once and its body later, which tells the relay when its connection closes. Frames
 * from the agent arrive in numbered POSTs; a repeated number is acknowledged, not applied.
 * Lives in memory: if the Durable Object is evicted, the agent's next poll gets 404 and it
 * opens a new session (as a WebSocket agent reconnects).
 */
export class PollingLink implements Link {
  readonly id = randomId();
  /** A visitor's `agent connect` on the HTTPS transport (tunnel-connect.ts), not an agent. */
  connector = false;
  private attachment: unknown = null;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private sent = 0;
  private unacknowledged: Uint8Array | undefined;
  private received = 0;
  private waiting: WritableStreamDefaultWriter<Uint8Array> | undefined;
  private waitTimer: ReturnType<typeof setTimeout> | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private closing: { code: number; reason: string } | undefined;
  private ended = false;

  /**
   * @param onEnd called once when the session ends, however it ends.
   * @param maxQueued bytes that may wait here for the agent's polls (see unackedLimit): an
   *   agent that acknowledges frames it never collected (it can count the relay's answers)
   *   would otherwise have them all wait here.
   */
  constructor(
    private readonly onEnd: (link: PollingLink, code: number, reason: string) => void,
    private readonly maxQueued: number,
  ) {
    this.idle(SESSION_IDLE_MS);
  }

  serializeAttachment(value: unknown): void {
    this.attachment = structuredClone(value);
  }

  deserializeAttachment(): unknown {
    return structuredClone(this.attachment);
  }

  send(message: string | ArrayBuffer | ArrayBufferView): void {
    if (this.closing || typeof message === "string") return;
    const bytes = ArrayBuffer.isView(message)
      ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength)
      : new Uint8Array(message);
    if (this.queued + bytes.byteLength > this.maxQueued) {
      const why = `the agent left ${this.queued + bytes.byteLength} bytes uncollected, past the limit of ${this.maxQueued}`;
      this.queue = [];
      this.queued = 0;
      this.close(CloseCode.Unacknowledged, why);
      return;
    }
    this.queue.push(bytes);
    this.queued += bytes.byteLength;
    // Frames queued in this turn leave together.
    if (this.waiting && this.queue.length === 1) queueMicrotask(() => this.answer());
  }

  /** The relay ends the session: the agent's next poll gets what is queued and why. */
  close(code = 1000, reason = ""): void {
    if (this.closing || this.ended) return;
    this.closing = { code, reason };
    if (this.waiting) queueMicrotask(() => this.answer());
    setTimeout(() => this.end(code, reason), CLOSE_LINGER_MS);
  }

  /** Answers the waiting poll now, with what is queued: the agent polls again at once if it is alive. */
  nudge(): void {
    if (this.waiting) queueMicrotask(() => this.answer());
  }

  /** The agent said goodbye (DELETE). */
  closedByAgent(code: number, reason: string): void {
    this.end(code, reason);
  }

  /**
   * A long poll that acknowledges batch `ack`: a GET, or a POST that asked to take frames
   * (TAKE_PARAM). Answers at once when frames are queued (or the last batch needs sending
   * again), else when some are, or after `waitMs` with none. A newer poll answers one still
   * waiting, so the agent has one poll here at a time, whichever request it is.
   */
  poll(ack: number, waitMs: number, signal?: AbortSignal): Response {
    if (this.ended) throw new EdgeError(404, "not-found", "This session has ended. Open a new one.");
    cancelTimer(this.idleTimer);
    if (this.unacknowledged && ack === this.sent - 1) return this.now(this.unacknowledged);
    if (ack !== this.sent) {
      throw new EdgeError(
        409,
        "bad-request",
        `This poll acknowledges batch ${ack}, but batch ${this.sent} was the last one sent.`,
      );
    }
    this.unacknowledged = undefined;
    // A newer poll replaces one still waiting (the agent lost its connection to it).
    this.answer();
    if (this.queue.length > 0 || this.closing || waitMs === 0) return this.now(this.take());
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const writer = writable.getWriter();
    this.waiting = writer;
    // Where the runtime reports a poll whose client left, the agent gets a short grace to poll again.
    const gone = () => {
      if (this.waiting !== writer) return;
      this.waiting = undefined;
      cancelTimer(this.waitTimer);
      this.idle(RECONNECT_GRACE_MS);
    };
    writer.closed.catch(gone);
    signal?.addEventListener("abort", gone);
    this.waitTimer = setTimeout(() => this.answer(), Math.max(0, Math.min(waitMs, MAX_POLL_WAIT_MS)));
    return new Response(readable, { headers: HEADERS });
  }

  /**
   * Whether the frames of POST number `seq` are new (to apply) or a repeat (already applied).
   * @throws {EdgeError} 409 for a number out of order.
   */
  receive(seq: number): "new" | "repeat" {
    if (this.ended) throw new EdgeError(404, "not-found", "This session has ended. Open a new one.");
    if (seq === this.received + 1) {
      this.received = seq;
      return "new";
    }
    if (seq >= 1 && seq <= this.received) return "repeat";
    throw new EdgeError(409, "bad-request", `This POST is number ${seq}, but ${this.received + 1} was expected.`);
  }

  /** Answers the waiting poll, if any, with what is queued (possibly nothing). */
  private answer(): void {
    const writer = this.waiting;
    if (!writer) return;
    this.waiting = undefined;
    cancelTimer(this.waitTimer);
    const body = this.take();
    writer.write(body).catch(() => {});
    // The next poll is due once the agent has this answer.
    writer.close().then(
      () => this.idle(SESSION_IDLE_MS),
      () => this.idle(RECONNECT_GRACE_MS),
    );
  }

  private now(body: Uint8Array): Response {
    this.idle(SESSION_IDLE_MS);
    return new Response(body as Uint8Array<ArrayBuffer>, { headers: HEADERS });
  }

  /** Takes queued messages, up to MAX_MESSAGE_BYTES, as the next numbered batch. */
  private take(): Uint8Array {
    let size = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || size + this.queue[count]!.byteLength <= MAX_MESSAGE_BYTES)) {
      size += this.queue[count++]!.byteLength;
    }
    let frames: Uint8Array = new Uint8Array(0);
    if (count > 0) {
      const parts = this.queue.splice(0, count);
      this.queued -= size;
      frames = parts.length === 1 ? parts[0]! : concatBytes(parts, size);
      this.sent++;
    }
    const close = this.closing && this.queue.length === 0 ? this.closing : undefined;
    const body = encodePollAnswer({ seq: this.sent, close, frames });
    if (count > 0) this.unacknowledged = body;
    if (close) queueMicrotask(() => this.end(close.code, close.reason));
    return body;
  }

  /** (Re)starts the countdown after which an agent that stopped polling counts as gone. */
  private idle(ms: number): void {
    cancelTimer(this.idleTimer);
    this.idleTimer = setTimeout(() => this.end(1006, "the agent stopped polling"), ms);
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.closing ??= { code, reason };
    cancelTimer(this.idleTimer);
    cancelTimer(this.waitTimer);
    // The waiting poll gets a last answer that says why, like any other: an end is no error.
    // Aborting its body instead errors a response stream nobody reads to the end, which workerd
    // reports as "Uncaught Error" with a stack trace each time an agent stops.
    const writer = this.waiting;
    this.waiting = undefined;
    if (writer) {
      writer.write(encodePollAnswer({ seq: this.sent, close: this.closing, frames: new Uint8Array(0) })).catch(() => {});
      writer.close().catch(() => {});
    }
    this.queue = [];
    this.queued = 0;
    this.onEnd(this, code, reason);
  }
}
