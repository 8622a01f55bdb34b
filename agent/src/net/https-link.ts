import {
  CloseCode,
  concatBytes,
  decodePollAnswer,
  HEARTBEAT,
  MAX_MESSAGE_BYTES,
  MAX_POLL_ANSWER,
  SESSION_HEADER,
  SESSION_PATH,
  unackedLimit,
} from "@burrow/protocol";
import { type DialReport, describe, type NetConfig, NetworkError } from "./dial.ts";
import { HttpConnection, type HttpResponse } from "./http.ts";
import type { RelayLink } from "./websocket.ts";

/** Consecutive failed requests after which the link counts as lost (the agent reconnects). */
const MAX_FAILURES = 3;
const SMALL_ANSWER = 64 * 1024;
/**
 * Bytes that may wait for a relay to take them: what the session may keep for it (see
 * unackedLimit). A relay that acknowledges frames it never took (it can count the agent's
 * answers) and stalls the POSTs would otherwise have them all wait here.
 */
const MAX_QUEUED = unackedLimit().bytes;

/**
 * The HTTPS transport: the same frames as the WebSocket, carried by plain requests that any
 * proxy passes. Relay -> agent frames come back from long polls, each answer complete (so a
 * proxy that buffers whole responses only delays it by nothing); agent -> relay frames go in
 * POSTs of at most MAX_MESSAGE_BYTES, one at a time, because some proxies hold a request body
 * until it ends. Both directions are numbered, so a request cut by a proxy is simply retried.
 */
export class HttpsLink implements RelayLink {
  onmessage: (message: Uint8Array | string) => void = () => {};
  onclose: (code: number, reason: string) => void = () => {};
  private readonly base: string;
  /** Names the session in every request, outside the URL (see SESSION_PATH). */
  private readonly session: Record<string, string>;
  private down: HttpConnection | undefined;
  private up: HttpConnection | undefined;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private sending = false;
  private upSeq = 0;
  private ack = 0;
  private finished = false;

  private constructor(
    private readonly relay: URL,
    private readonly config: NetConfig,
    session: string,
    private readonly waitMs: number,
    first: HttpConnection,
  ) {
    const shard = relay.searchParams.get("shard");
    this.base = `${SESSION_PATH}?name=${encodeURIComponent(relay.searchParams.get("name") ?? "")}${shard ? `&shard=${shard}` : ""}`;
    this.session = { [SESSION_HEADER]: session };
    this.up = first;
  }

  /**
   * Opens a session for tunnel `name` and starts polling. A relay with tokens wants `token`
   * before it opens a session; the hello carries it again.
   * @throws {NetworkError} when the relay or the path to it refuses.
   */
  static async open(
    relay: URL,
    name: string,
    config: NetConfig,
    waitMs: number,
    report?: DialReport,
    token = "",
    shard = 0,
  ): Promise<HttpsLink> {
    const connection = await HttpConnection.open(relay, config, report);
    let response: HttpResponse;
    try {
      response = await connection.request(
        "POST",
        `${SESSION_PATH}?name=${encodeURIComponent(name)}${shard ? `&shard=${shard}` : ""}`,
        {
          timeoutMs: config.timeoutMs,
          maxBody: SMALL_ANSWER,
          headers: token ? { Authorization: `Bearer ${token}` } : {},
        },
      );
    } catch (error) {
      connection.close();
      throw new NetworkError("https", `the relay did not answer the HTTPS transport: ${describe(error)}`, "", false);
    }
    const session =
      response.status === 201 ? (JSON.parse(response.body.toString("utf8")) as { session?: string }).session : undefined;
    if (!session) {
      connection.close();
      throw new NetworkError(
        "https",
        `opening an HTTPS session was answered ${response.status} ${response.statusText}: ${response.body.toString("utf8").slice(0, 200).trim()}`,
        response.headers.has("x-burrow-error") ? "" : "something between the agent and the relay answered instead of the relay",
        false,
      );
    }
    const url = new URL(relay);
    url.searchParams.set("name", name);
    if (shard) url.searchParams.set("shard", String(shard));
    const link = new HttpsLink(url, config, session, waitMs, connection);
    setImmediate(() => void link.poll());
    return link;
  }

  send(message: Uint8Array | Uint8Array[] | string): void {
    // Heartbeats are not needed here: every poll is one, answered within waitMs.
    if (this.finished || typeof message === "string") return;
    const bytes = Array.isArray(message)
      ? concatBytes(
          message,
          message.reduce((n, part) => n + part.byteLength, 0),
        )
      : message;
    if (this.queued + bytes.byteLength > MAX_QUEUED) {
      const why = `the relay left ${this.queued + bytes.byteLength} bytes untaken, past the limit of ${MAX_QUEUED}`;
      this.close(CloseCode.Unacknowledged, why);
      // At once, not after the goodbye: nothing more is queued, and what was is let go.
      this.finish(CloseCode.Unacknowledged, why);
      return;
    }
    this.queue.push(bytes);
    this.queued += bytes.byteLength;
    if (!this.sending) void this.flush();
  }

  close(code: number, reason: string): void {
    if (this.finished) return;
    const path = `${this.base}&code=${code}&reason=${encodeURIComponent(reason.slice(0, 120))}`;
    const goodbye = HttpConnection.open(this.relay, this.config)
      .then((connection) =>
        connection
          .request("DELETE", path, { timeoutMs: 2000, maxBody: SMALL_ANSWER, headers: this.session })
          .finally(() => connection.close()),
      )
      .catch(() => undefined);
    void goodbye.then(() => this.finish(code, reason));
  }

  private async poll(): Promise<void> {
    let failures = 0;
    while (!this.finished) {
      try {
        this.down = this.down?.usable ? this.down : await HttpConnection.open(this.relay, this.config);
        const response = await this.down.request("GET", `${this.base}&ack=${this.ack}&wait=${this.waitMs}`, {
          timeoutMs: this.waitMs + this.config.timeoutMs,
          maxBody: MAX_POLL_ANSWER,
          headers: this.session,
        });
        if (this.finished) return;
        if (response.status === 404) return this.finish(1006, "the relay no longer knows this session (it restarted)");
        if (response.status !== 200) throw new Error(`the poll was answered ${response.status} ${response.statusText}`);
        failures = 0;
        const answer = decodePollAnswer(response.body);
        if (answer.seq === this.ack + 1) {
          this.ack = answer.seq;
          if (answer.frames.byteLength > 0) this.onmessage(answer.frames);
        }
        this.onmessage(HEARTBEAT.pong);
        if (answer.close) return this.finish(answer.close.code, answer.close.reason);
      } catch (error) {
        if (this.finished) return;
        if (++failures >= MAX_FAILURES) return this.finish(1006, `polling the relay failed: ${describe(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 200 * failures));
      }
    }
  }

  private async flush(): Promise<void> {
    this.sending = true;
    while (this.queue.length > 0 && !this.finished) {
      let size = this.queue[0]!.byteLength;
      let count = 1;
      while (count < this.queue.length && size + this.queue[count]!.byteLength <= MAX_MESSAGE_BYTES) {
        size += this.queue[count++]!.byteLength;
      }
      const parts = this.queue.splice(0, count);
      this.queued -= size;
      const body = parts.length === 1 ? parts[0]! : concatBytes(parts, size);
      const seq = ++this.upSeq;
      for (let failures = 0; !this.finished; ) {
        try {
          this.up = this.up?.usable ? this.up : await HttpConnection.open(this.relay, this.config);
          const response = await this.up.request("POST", `${this.base}&seq=${seq}`, {
            body,
            headers: { "Content-Type": "application/octet-stream", ...this.session },
            timeoutMs: 30_000,
            maxBody: SMALL_ANSWER,
          });
          if (response.status === 404) return this.finish(1006, "the relay no longer knows this session (it restarted)");
          if (response.status >= 300) throw new Error(`a POST was answered ${response.status} ${response.statusText}`);
          break;
        } catch (error) {
          if (++failures >= MAX_FAILURES) return this.finish(1006, `sending to the relay failed: ${describe(error)}`);
          await new Promise((resolve) => setTimeout(resolve, 200 * failures));
        }
      }
    }
    this.sending = false;
  }

  private finish(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.queue = [];
    this.queued = 0;
    this.down?.close();
    this.up?.close();
    this.onclose(code, reason);
  }
}
