import {
  CloseCode,
  concatBytes,
  decodePollAnswer,
  HEARTBEAT,
  MAX_MESSAGE_BYTES,
  MAX_POLL_ANSWER,
  SESSION_HEADER,
  SESSION_PATH,
  TAKE_PARAM,
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
 * After an answer that brought frames, how long the next poll waits for a POST to carry it (the
 * origin's answer to a request usually comes sooner): TCP's delayed ACK, which waits for data to
 * ride on (RFC 1122 4.2.3.2), for polls. Frames for other streams that reach the relay meanwhile
 * wait at most this long.
 */
const REPOLL_DELAY_MS = 20;

/**
 * The HTTPS transport: the same frames as the WebSocket, carried by plain requests that any
 * proxy passes. Relay -> agent frames come back from long polls, each answer complete (so a
 * proxy that buffers whole responses only delays it by nothing); agent -> relay frames go in
 * POSTs of at most MAX_MESSAGE_BYTES, one at a time, because some proxies hold a request body
 * until it ends. Both directions are numbered, so a request cut by a proxy is simply retried.
 *
 * One poll is at the relay at a time, and where the relay takes them (TAKE_PARAM) a POST is the
 * poll whenever no GET is out: a request answered through the tunnel then costs one exchange
 * (the POST of its response brings the next request back), not a POST and a GET. A POST that
 * waits as the poll holds back the next one, so the agent sends a GET to take its place. While
 * a response body is under way (`sendingMore`) POSTs are plain and the poll is a GET, as before
 * TAKE_PARAM: a download's POSTs would otherwise wait for that release at every pause.
 */
export class HttpsLink implements RelayLink {
  onmessage: (message: Uint8Array | string) => void = () => {};
  onclose: (code: number, reason: string) => void = () => {};
  /** Whether the agent has more to send soon without hearing from the relay (a response body under way). */
  sendingMore: () => boolean = () => false;
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
  /** A GET poll is at the relay. */
  private getting = false;
  /** The POST in flight is the poll and may wait there for frames. */
  private postPolling = false;
  private pollFailures = 0;
  private repoll: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    private readonly relay: URL,
    private readonly config: NetConfig,
    session: string,
    private readonly waitMs: number,
    first: HttpConnection,
    /** The relay answers a POST with frames when asked (its session's opening said so). */
    private readonly takes: boolean,
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
    /** CONNECTOR_ROLE for a visitor's `agent connect`. */
    role?: string,
  ): Promise<HttpsLink> {
    const connection = await HttpConnection.open(relay, config, report);
    let response: HttpResponse;
    try {
      response = await connection.request(
        "POST",
        `${SESSION_PATH}?name=${encodeURIComponent(name)}${shard ? `&shard=${shard}` : ""}${role ? `&role=${role}` : ""}`,
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
    const opened =
      response.status === 201 ? (JSON.parse(response.body.toString("utf8")) as { session?: string; take?: unknown }) : {};
    const session = opened.session;
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
    const link = new HttpsLink(url, config, session, waitMs, connection, opened.take === true);
    // The hello's POST, sent at once, is the first poll where the relay takes frames.
    setImmediate(() => link.keepPolling());
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
    else if (this.postPolling) this.keepPolling();
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

  /**
   * Keeps one poll at the relay: a GET when no POST is the poll, or when the POST that is holds
   * back frames queued behind it (the GET answers it). After an answer that brought frames, the
   * GET waits `delay` ms for a POST to be the poll instead.
   */
  private keepPolling(delay = 0): void {
    if (this.finished || this.getting) return;
    const posts = this.postsPoll();
    if (this.postPolling ? this.queue.length === 0 : this.sending && posts) return;
    if (delay > 0 && posts) {
      this.repoll ??= setTimeout(() => {
        this.repoll = undefined;
        this.keepPolling();
      }, delay);
      return;
    }
    clearTimeout(this.repoll);
    this.repoll = undefined;
    void this.poll();
  }

  /**
   * Whether POSTs are polls now: where the relay takes them, and not while a response body is
   * under way (its POSTs follow each other as the origin and the credit allow, and one waiting
   * as the poll would hold the next back until a GET released it, a round trip each time).
   */
  private postsPoll(): boolean {
    return this.takes && !this.sendingMore();
  }

  private async poll(): Promise<void> {
    this.getting = true;
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
      this.pollFailures = 0;
      this.getting = false;
      this.keepPolling(this.collect(response.body) ? REPOLL_DELAY_MS : 0);
    } catch (error) {
      this.getting = false;
      if (this.finished) return;
      if (++this.pollFailures >= MAX_FAILURES) return this.finish(1006, `polling the relay failed: ${describe(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 200 * this.pollFailures));
      this.keepPolling();
    }
  }

  /** Applies a poll's answer (a GET's, or a POST's that took frames). Whether it brought frames. */
  private collect(body: Uint8Array): boolean {
    const answer = decodePollAnswer(body);
    let fresh = false;
    if (answer.seq === this.ack + 1) {
      this.ack = answer.seq;
      fresh = answer.frames.byteLength > 0;
      if (fresh) this.onmessage(answer.frames);
    }
    this.onmessage(HEARTBEAT.pong);
    if (answer.close) this.finish(answer.close.code, answer.close.reason);
    return fresh;
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
      let fresh = false;
      for (let failures = 0; !this.finished; ) {
        // The poll when no GET is out: it waits for frames only if nothing is queued behind it.
        const polls = this.postsPoll() && !this.getting;
        const wait = this.queue.length > 0 ? 0 : this.waitMs;
        this.postPolling = polls && wait > 0;
        if (polls) {
          clearTimeout(this.repoll);
          this.repoll = undefined;
        } else {
          // A response body began while a GET was only due after REPOLL_DELAY_MS: it is due now.
          this.keepPolling();
        }
        try {
          this.up = this.up?.usable ? this.up : await HttpConnection.open(this.relay, this.config);
          const path = polls ? `${this.base}&seq=${seq}&${TAKE_PARAM}=1&ack=${this.ack}&wait=${wait}` : `${this.base}&seq=${seq}`;
          const response = await this.up.request("POST", path, {
            body,
            headers: { "Content-Type": "application/octet-stream", ...this.session },
            timeoutMs: polls ? wait + this.config.timeoutMs : 30_000,
            maxBody: polls ? MAX_POLL_ANSWER : SMALL_ANSWER,
          });
          this.postPolling = false;
          if (this.finished) return;
          if (response.status === 404) return this.finish(1006, "the relay no longer knows this session (it restarted)");
          if (response.status >= 300) throw new Error(`a POST was answered ${response.status} ${response.statusText}`);
          if (polls && response.status === 200) fresh = this.collect(response.body);
          break;
        } catch (error) {
          this.postPolling = false;
          if (this.finished) return;
          if (++failures >= MAX_FAILURES) return this.finish(1006, `sending to the relay failed: ${describe(error)}`);
          await new Promise((resolve) => setTimeout(resolve, 200 * failures));
        }
      }
      if (this.queue.length === 0) {
        this.sending = false;
        this.keepPolling(fresh ? REPOLL_DELAY_MS : 0);
      }
    }
    this.sending = false;
  }

  private finish(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.repoll);
    this.queue = [];
    this.queued = 0;
    this.down?.close();
    this.up?.close();
    this.onclose(code, reason);
  }
}
