import { CLOSE_HEADER, concatBytes, MAX_MESSAGE_BYTES, MAX_POLL_WAIT_MS, SEQ_HEADER } from "@burrow/protocol";
import { EdgeError } from "./errors.ts";

/**
 * What the Durable Object needs of an agent's connection, whichever transport carries it:
 * the hibernatable WebSocket, or a {@link PollingLink} for the HTTPS transport.
 */
export type AgentLink = Pick<WebSocket, "send" | "close" | "serializeAttachment" | "deserializeAttachment">;

/** A session with no poll for this long after its last one ended is taken as gone. */
const SESSION_IDLE_MS = 30_000;
/** How long a closed session waits for the agent's next poll to hear why. */
const CLOSE_LINGER_MS = 5_000;

/**
 * The relay side of the HTTPS transport: an agent link made of requests. Frames for the agent
 * queue here until its long poll collects them; each answer is numbered and kept until the
 * next poll acknowledges it, so an answer a proxy cut is sent again. Frames from the agent
 * arrive in numbered POSTs; a repeated number is acknowledged without being applied twice.
 * Lives in memory: if the Durable Object is evicted, the agent's next poll gets 404 and it
 * opens a new session (as a WebSocket agent reconnects).
 */
export class PollingLink implements AgentLink {
  readonly id = randomId();
  private attachment: unknown = null;
  private queue: Uint8Array[] = [];
  private sent = 0;
  private unacknowledged: Uint8Array | undefined;
  private received = 0;
  private waiting: ((response: Response) => void) | undefined;
  private waitTimer: ReturnType<typeof setTimeout> | null = null;
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  private closing: { code: number; reason: string } | undefined;
  private ended = false;

  /** @param onEnd called once when the session ends, however it ends. */
  constructor(private readonly onEnd: (link: PollingLink, code: number, reason: string) => void) {
    this.idle();
  }

  serializeAttachment(value: unknown): void {
    this.attachment = structuredClone(value);
  }

  deserializeAttachment(): unknown {
    return structuredClone(this.attachment);
  }

  send(message: string | ArrayBuffer | ArrayBufferView): void {
    if (this.closing || typeof message === "string") return;
    this.queue.push(
      ArrayBuffer.isView(message)
        ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength)
        : new Uint8Array(message),
    );
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

  /** The agent said goodbye (DELETE). */
  closedByAgent(code: number, reason: string): void {
    this.end(code, reason);
  }

  /**
   * A long poll that acknowledges batch `ack`. Answers at once when frames are queued (or the
   * last batch needs sending again), else within `waitMs`.
   */
  poll(ack: number, waitMs: number): Promise<Response> | Response {
    clearTimeout(this.idleTimer);
    if (this.unacknowledged && ack === this.sent - 1) {
      this.idle();
      return this.batch(this.unacknowledged, this.sent);
    }
    if (ack !== this.sent) {
      throw new EdgeError(409, "bad-request", `this poll acknowledges batch ${ack} but batch ${this.sent} was the last one sent`);
    }
    this.unacknowledged = undefined;
    // A newer poll replaces one still waiting (the agent's connection to it was cut).
    this.answerEmpty();
    if (this.queue.length > 0 || this.closing) return this.take();
    return new Promise<Response>((resolve) => {
      this.waiting = resolve;
      this.waitTimer = setTimeout(() => this.answerEmpty(), Math.max(0, Math.min(waitMs, MAX_POLL_WAIT_MS)));
    });
  }

  /**
   * Whether the frames of POST number `seq` are new (to apply), a repeat (already applied), or
   * out of order (a broken agent).
   */
  receive(seq: number): "new" | "repeat" {
    if (seq === this.received + 1) {
      this.received = seq;
      return "new";
    }
    if (seq >= 1 && seq <= this.received) return "repeat";
    throw new EdgeError(409, "bad-request", `this POST is number ${seq} but ${this.received + 1} was expected`);
  }

  private answer(): void {
    const resolve = this.waiting;
    if (!resolve) return;
    this.waiting = undefined;
    clearTimeout(this.waitTimer);
    resolve(this.take());
  }

  private answerEmpty(): void {
    const resolve = this.waiting;
    if (!resolve) return;
    this.waiting = undefined;
    clearTimeout(this.waitTimer);
    this.idle();
    resolve(this.batch(new Uint8Array(0), this.sent));
  }

  /** Takes queued messages, up to MAX_MESSAGE_BYTES, as the next numbered batch. */
  private take(): Response {
    let size = 0;
    let count = 0;
    while (count < this.queue.length && (count === 0 || size + this.queue[count]!.byteLength <= MAX_MESSAGE_BYTES)) {
      size += this.queue[count++]!.byteLength;
    }
    const parts = this.queue.splice(0, count);
    if (count > 0) {
      this.unacknowledged = parts.length === 1 ? parts[0]! : concatBytes(parts, size);
      this.sent++;
    }
    this.idle();
    const body = count > 0 ? this.unacknowledged! : new Uint8Array(0);
    const response = this.batch(body, this.sent);
    if (this.closing && this.queue.length === 0) {
      response.headers.set(CLOSE_HEADER, `${this.closing.code} ${encodeURIComponent(this.closing.reason)}`);
      queueMicrotask(() => this.end(this.closing!.code, this.closing!.reason));
    }
    return response;
  }

  private batch(body: Uint8Array, seq: number): Response {
    return new Response(body, {
      headers: { "Content-Type": "application/octet-stream", "Cache-Control": "no-store", [SEQ_HEADER]: String(seq) },
    });
  }

  /** (Re)starts the countdown after which an agent that stopped polling counts as gone. */
  private idle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.end(1006, "the agent stopped polling"), SESSION_IDLE_MS);
  }

  private end(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.closing ??= { code, reason };
    clearTimeout(this.idleTimer);
    clearTimeout(this.waitTimer);
    const resolve = this.waiting;
    this.waiting = undefined;
    resolve?.(new EdgeError(404, "not-found", "this session has ended").toResponse());
    this.queue = [];
    this.onEnd(this, code, reason);
  }
}

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}
