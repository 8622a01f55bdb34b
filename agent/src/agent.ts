import {
  CloseCode,
  CONNECT_PATH,
  CONNECTOR_ROLE,
  decodeMessage,
  encodeFrame,
  type Frame,
  FrameSession,
  FrameType,
  HEARTBEAT,
  type InvalidFrame,
  MAX_POLL_WAIT_MS,
  PROTOCOL_VERSION,
  type ReadyFrame,
  type RefusedFrame,
  type VisitorRules,
} from "@burrow/protocol";
import { AgentError } from "./errors.ts";
import { Forwarder } from "./forward.ts";
import type { Observer } from "./inspector/observer.ts";
import type { Log } from "./log.ts";
import { randomClaim } from "./names.ts";
import { dial, type NetConfig, NetworkError } from "./net/dial.ts";
import { HttpsLink } from "./net/https-link.ts";
import { openWebSocket, type RelayLink, UpgradeRefused } from "./net/websocket.ts";
import type { Origin } from "./origin.ts";
import { probeInfo, runsFromClone } from "./relay-info.ts";
import type { Runtime } from "./runtime.ts";
import { announcePublicPort } from "./tcp/public-port.ts";

export type TransportChoice = "auto" | "websocket" | "https";

/** What a session's frames are served by: HTTP to an origin, TCP to a target, a visitor's local clients. */
export interface SessionStreams {
  /** A frame of the session from the relay. */
  receive(frame: Frame | InvalidFrame): unknown;
  /** The session ended (`why`, for the streams' users): every stream is abandoned. */
  abortAll(why?: string): void;
  /** Streams open, for the resume line. */
  readonly open: number;
  /** Sending a response body now (the HTTPS transport does not hold such POSTs as polls). */
  readonly responding: boolean;
}

/**
 * What a tunnel's connection serves, beside the HTTP origin of `agent --port`: a TCP target
 * (`agent --tcp`) or a visitor's local clients (`agent connect`). `up` replaces the tunnel-up
 * lines when given.
 */
export interface LinkService {
  readonly label: string;
  streams(send: (frame: Frame) => void, log: Log): SessionStreams;
  up?(frame: ReadyFrame, resumed: boolean, open: number): void;
}

export interface AgentOptions {
  /** The relay's base URL, http(s)://. */
  relay: URL;
  name: string;
  token: string;
  /** The secret that proves on an open relay that the name is ours (claims.ts); else one per process. */
  claim?: string;
  /** Who may visit; the relay enforces them. */
  rules: VisitorRules;
  /** Milliseconds between heartbeats; the connection is declared dead after 2.5 silent periods. */
  heartbeatMs: number;
  /** The agent's version, sent in the hello. */
  version: string;
  /** Proxy, trust and timeouts for reaching the relay. */
  net: NetConfig;
  /** "auto": WebSocket, falling back to HTTPS when WebSockets are blocked. */
  transport: TransportChoice;
  /** Told of every request and WebSocket (the inspector); none with --inspect false. */
  observer?: Observer;
  /**
   * Which of the tunnel's connections this is (`--connections`), 0 to `connections` - 1: each
   * goes to its own Durable Object of the tunnel, its shard. 0, the default, holds the name.
   */
  shard?: number;
  connections?: number;
  /** A TCP tunnel (`--tcp`): the hello says so, and a relay that does not carry TCP is an error. */
  tcp?: boolean;
  /** A TCP tunnel asks the relay for a public port (`--public-port`). */
  publicPort?: boolean;
  /** A visitor's `agent connect`: it says Connect with this key instead of Hello. */
  connect?: { key: string };
}

/** How one connection ended. */
interface SessionEnd {
  ready: boolean;
  refused?: RefusedFrame;
  why: string;
  /** Why the link could not be opened, with the fix. */
  failure?: NetworkError;
  /** The transport just changed: try again at once. */
  fallback?: boolean;
  /** The link's close code, when the relay closed it. */
  closeCode?: number;
}

/** A WebSocket that dies sooner than this after opening, twice in a row, counts as blocked. */
const EARLY_DEATH_MS = 10_000;
/**
 * How long the relay has to answer the hello. A connection that opens but carries nothing (a
 * proxy that passes the upgrade, then no messages) is given up then, early enough to count as
 * an early death, instead of after 2.5 heartbeat periods.
 */
const READY_TIMEOUT_MS = 8_000;
const EARLY_DEATHS_TO_FALL_BACK = 2;
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 30_000;
const STOP_GRACE_MS = 2_000;
/**
 * How long a reconnecting agent keeps asking for its own name while the relay says it is taken:
 * longer than the relay's 60 s grace, since a relay that restarted can still count this agent's
 * previous connection as alive until that grace runs out.
 */
const NAME_RETURN_WAIT_MS = 90_000;
/** After a close for sending too much (4005), the next attempt waits at least this long. */
const RATE_LIMITED_MIN_ATTEMPT = 4;

/**
 * Keeps one tunnel up: connects, says hello, serves streams, and after any drop reconnects
 * with capped, jittered exponential backoff under the same name (the claim proves it is us).
 */
export class Agent {
  private readonly claim: string;
  private warnedOpen = false;
  /** The relay's notice and the public TCP port last told (each said once, not at every reconnect). */
  private noticed = "";
  private announcedPort = "";
  private link: RelayLink | undefined;
  private stopped = false;
  /** The transport in use; "auto" starts on WebSocket and may move to HTTPS for good. */
  private transport: "websocket" | "https";
  private fallbackReason = "";
  private announced = "";
  private earlyDeaths = 0;
  private wake: (() => void) | undefined;
  private wasUp = false;
  private endSession: ((why: string) => void) | undefined;
  /** Aborts the dial in progress (TCP, proxy, TLS, upgrade): Ctrl-C does not wait for its timeouts. */
  private dialing: AbortController | undefined;
  /** The relay said Ready on the current link (a stop then waits for the close handshake). */
  private linkReady = false;
  /** Whether a refused first connection led to asking what answers at --relay (once a run). */
  private askedWhatAnswers = false;
  /**
   * The session the relay gave this agent: its streams, and the frames kept for a resend, which
   * outlive a cut connection (see FrameSession). A Ready that does not resume it ends it.
   */
  private current: { id: string; frames: FrameSession; forwarder: SessionStreams } | undefined;
  private readonly service: LinkService;
  /** Why the last link that was up ended, for the streams a new session ends. */
  private lastDrop = "";

  constructor(
    private readonly options: AgentOptions,
    served: Origin | LinkService,
    private readonly runtime: Runtime,
    private readonly log: Log,
  ) {
    this.transport = options.transport === "https" ? "https" : "websocket";
    this.claim = options.claim ?? randomClaim();
    this.service =
      "streams" in served
        ? served
        : {
            label: served.label,
            streams: (send, log) => new Forwarder(served, send, log, options.observer),
          };
  }

  /** Whether the relay ever said Ready. */
  get everUp(): boolean {
    return this.wasUp;
  }

  private markUp: (() => void) | undefined;
  /** Resolves when the relay first says Ready (a tunnel's other connections wait for its first). */
  readonly up: Promise<void> = new Promise((resolve) => {
    this.markUp = resolve;
  });

  /** The URL the agent dials: ws(s)://relay/_burrow/connect?name=... */
  get connectUrl(): string {
    const url = new URL(CONNECT_PATH, this.options.relay);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("name", this.options.name);
    if (this.options.shard) url.searchParams.set("shard", String(this.options.shard));
    if (this.options.connect) url.searchParams.set("role", CONNECTOR_ROLE);
    return url.href;
  }

  /**
   * Runs until `stop()`. Resolves when stopped.
   * @throws {AgentError} "refused" when the relay refuses the tunnel for a reason retrying cannot fix.
   */
  async run(): Promise<void> {
    let attempt = 0;
    let everReady = false;
    /** When the relay first said our name was taken since the tunnel was last up. */
    let takenSince: number | undefined;
    /** The cause of the last failed attempt, said once while it repeats. */
    let lastWhy = "";
    while (!this.stopped) {
      const end = await this.session();
      if (end.ready) this.lastDrop = end.why;
      if (this.stopped) break;
      if (end.closeCode === CloseCode.Replaced) {
        // Another process with the same token (or claim file) took the tunnel over. Taking it
        // back would start two agents stealing it from each other forever.
        throw new AgentError(
          "refused",
          `the tunnel ${this.options.name} was taken over by a newer agent with the same token; stopping`,
          "stop the other agent first, or give this one another --name",
        );
      }
      if (end.ready) {
        attempt = 0;
        everReady = true;
        takenSince = undefined;
      }
      if (end.refused?.code === "rate-limited") {
        attempt = Math.max(attempt, RATE_LIMITED_MIN_ATTEMPT);
        this.log.warn(`the relay is limiting connection attempts (${end.refused.message}); backing off`, "rate-limited");
      } else if (end.refused?.code === "name-taken" && everReady) {
        const now = performance.now();
        if (takenSince === undefined) {
          takenSince = now;
          this.log.warn(
            `the relay says the name ${this.options.name} is taken (${end.refused.message}); it may still count this agent's previous connection as alive, so the agent keeps asking for up to ${NAME_RETURN_WAIT_MS / 1000}s`,
          );
        } else if (now - takenSince > NAME_RETURN_WAIT_MS) {
          throw refusal(end.refused);
        }
      } else if (end.refused?.code === "agent-offline" && everReady) {
        // A visitor's connect whose tunnel's agent left: it waits for it, as a listener would.
        // Its session went with the agent's (the relay keeps none without it): its connections end.
        this.endStreams(`the tunnel's agent left meanwhile: ${end.refused.message}`);
        attempt = Math.max(attempt, 3);
      } else if (end.refused?.code === "shard-waiting") {
        // The tunnel's first connection is not (or no longer) up: this one waits for it.
        attempt = Math.max(attempt, 2);
      } else if (end.refused) {
        throw refusal(end.refused, this.options.tcp || this.options.connect ? this.options : undefined);
      }
      if (end.closeCode === CloseCode.RateLimited) attempt = Math.max(attempt, RATE_LIMITED_MIN_ATTEMPT);
      const delay = end.fallback ? 0 : Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt++) * (0.5 + Math.random() / 2);
      if (end.fallback) continue;
      const retry = { attempt, reason: end.why, retryInMs: Math.round(delay) };
      this.log.update({ state: `reconnecting in ${formatDelay(delay)}` });
      if (end.ready) {
        this.log.info(`connection lost (${end.why}); reconnecting in ${formatDelay(delay)}`, "connection-lost", retry);
      } else if (end.why === lastWhy) {
        this.log.info(
          `still cannot connect (attempt ${attempt}); retrying in ${formatDelay(delay)}`,
          "still-cannot-connect",
          retry,
        );
      } else if (!everReady && attempt === 1 && end.failure) {
        // The first failure says what is wrong and what to do, in the error line alone.
        const local = end.failure.step === "relay" && /^(localhost|127\.|\[::1\])/.test(this.options.relay.host);
        const hint = local ? notRunningHint(this.options.relay) : end.failure.hint;
        this.log.error(end.failure.message, `${hint}; retrying in ${formatDelay(delay)}`, "cannot-connect", retry);
      } else {
        this.log.info(`cannot connect (${end.why}); reconnecting in ${formatDelay(delay)}`, "cannot-connect", retry);
      }
      lastWhy = end.ready ? "" : end.why;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Closes the connection cleanly (the relay frees the name at once) and ends `run()`. */
  stop(): void {
    this.stopped = true;
    // What the session queued this turn goes before the close (FrameSession batches until
    // setImmediate, and end() drops the batch): `connect --stdio`'s End, pushed as its stdin's
    // EOF closed the connection both ways and stopped it, else never reaches the relay, which
    // then resets the stream at the tunnel's agent instead of seeing it close.
    this.current?.frames.detach();
    this.endStreams();
    this.dialing?.abort();
    this.link?.close(CloseCode.Normal, "agent stopped");
    this.wake?.();
    // Before Ready the relay holds nothing of this agent's: no need to wait for its close.
    if (!this.linkReady) this.endSession?.("stopped");
    // A relay that never completes the close handshake does not hold the agent up for long.
    else setTimeout(() => this.endSession?.("stopped"), STOP_GRACE_MS);
  }

  /** Opens a link on the current transport, then serves it until it ends. */
  private async session(): Promise<SessionEnd> {
    let link: RelayLink;
    try {
      link = await this.connect();
    } catch (error) {
      if (this.stopped) return { ready: false, why: "stopped" };
      // Answered, but not as a relay answers: ask once what is there (a web page, a redirect,
      // another server's 404 say for certain that --relay is wrong, and retrying cannot help).
      const answered = error instanceof UpgradeRefused || (error instanceof NetworkError && error.step === "https");
      if (answered && !this.wasUp && !this.askedWhatAnswers) {
        this.askedWhatAnswers = true;
        const info = await probeInfo(this.options.relay, this.options.net);
        if (info.ok === false && info.notRelay) throw new AgentError("network", info.detail, info.hint);
      }
      if (!(error instanceof NetworkError)) {
        if (this.runtime.explain?.(error)) throw error;
        const failure = new NetworkError(
          "relay",
          `cannot reach the relay at ${this.options.relay.origin}: ${(error as Error).message}`,
          "",
          false,
        );
        return { ready: false, why: failure.message, failure };
      }
      if (error.fatal) throw new AgentError("network", error.message, error.hint);
      if (error instanceof UpgradeRefused && this.options.transport === "auto") {
        this.fallBack(error.message);
        return { ready: false, why: error.message, fallback: true };
      }
      return { ready: false, why: error.message, failure: error };
    }
    if (this.stopped) {
      link.close(CloseCode.Normal, "agent stopped");
      return { ready: false, why: "stopped" };
    }
    const reason = this.transport === "https" && this.fallbackReason ? ` (${this.fallbackReason})` : "";
    const line = `transport: ${this.transport}${reason}`;
    this.log.update({ transport: this.transport });
    if (line !== this.announced) {
      this.log.info(line, "transport", { transport: this.transport, ...(reason ? { reason: this.fallbackReason } : {}) });
    }
    this.announced = line;
    const openedAt = performance.now();
    const end = await this.serve(link);
    if (this.transport === "websocket" && this.options.transport === "auto" && !end.ready && !end.refused && !this.stopped) {
      if (performance.now() - openedAt < EARLY_DEATH_MS && ++this.earlyDeaths >= EARLY_DEATHS_TO_FALL_BACK) {
        this.fallBack(`the WebSocket connection died ${this.earlyDeaths} times before the relay answered (${end.why})`);
        return { ...end, fallback: true };
      }
    } else if (end.ready) {
      this.earlyDeaths = 0;
    }
    return end;
  }

  /** Dials the relay on the current transport (through the proxy and TLS of `options.net`). */
  private async connect(): Promise<RelayLink> {
    const { relay, name, heartbeatMs, token } = this.options;
    const dialing = new AbortController();
    this.dialing = dialing;
    // Every socket the dial opens is destroyed if the agent stops meanwhile (see openTcp).
    const net = { ...this.options.net, signal: dialing.signal };
    try {
      if (this.transport === "https") {
        const link = await HttpsLink.open(
          relay,
          name,
          net,
          Math.min(heartbeatMs, MAX_POLL_WAIT_MS),
          undefined,
          token,
          this.options.shard,
          this.options.connect ? CONNECTOR_ROLE : undefined,
        );
        link.sendingMore = () => this.current?.forwarder.responding ?? false;
        return link;
      }
      const url = new URL(this.connectUrl);
      return await openWebSocket(await dial(url, net), url, net.timeoutMs);
    } finally {
      // Connected: a stop now closes the link cleanly instead (the relay frees the name).
      this.dialing = undefined;
    }
  }

  private fallBack(why: string): void {
    this.transport = "https";
    this.fallbackReason = why;
    this.log.warn(`${why}; switching to the HTTPS transport`, "fallback", { transport: "https", reason: why });
  }

  private serve(link: RelayLink): Promise<SessionEnd> {
    const { name, token, heartbeatMs, version } = this.options;
    return new Promise<SessionEnd>((resolve) => {
      let ready = false;
      this.linkReady = false;
      let refused: RefusedFrame | undefined;
      let lastHeard = performance.now();
      /** When the unanswered heartbeat left: its answer gives the round trip to the relay. */
      let pingSentAt: number | undefined;
      const ping = () => {
        pingSentAt = performance.now();
        link.send(HEARTBEAT.ping);
      };
      this.link = link;

      // The hello travels outside the session, alone; it asks to go on with the one this agent
      // had, if any, saying how far it got.
      const resume = this.current ? { session: this.current.id, received: this.current.frames.received } : null;
      const connect = this.options.connect;
      link.send(
        encodeFrame(
          connect
            ? { type: FrameType.Connect, version: PROTOCOL_VERSION, client: version, name, key: connect.key, resume }
            : {
                type: FrameType.Hello,
                version: PROTOCOL_VERSION,
                agent: version,
                name,
                token,
                claim: this.claim,
                rules: this.options.rules,
                resume,
                tcp: this.options.tcp ?? false,
                publicPort: this.options.publicPort ?? false,
              },
        ),
      );
      // WebSocket only: the HTTPS transport opens a second connection for the poll that brings
      // the answer, retries what a proxy cuts, and has no transport to fall back to.
      const readyTimer = setTimeout(() => {
        if (ready || refused || this.transport !== "websocket") return;
        link.close(CloseCode.HeartbeatTimeout, "no answer to hello");
        finish(`the relay did not answer within ${READY_TIMEOUT_MS / 1000}s`);
      }, READY_TIMEOUT_MS);
      const heartbeat = setInterval(() => {
        if (performance.now() - lastHeard > heartbeatMs * 2.5) {
          this.log.debug("no heartbeat answer; closing the connection");
          link.close(CloseCode.HeartbeatTimeout, "heartbeat timeout");
          finish("the relay stopped answering heartbeats");
          return;
        }
        ping();
      }, heartbeatMs);

      const broken = (message: string) => {
        this.log.warn(`the relay sent a malformed frame (${message}); reconnecting`);
        link.close(CloseCode.ProtocolError, "malformed frame");
        finish(`malformed frame: ${message}`);
      };

      link.onmessage = (data) => {
        // A link being closed may still deliver what was on its way (the HTTPS transport's
        // poll): the session has moved on.
        if (finished) return;
        lastHeard = performance.now();
        if (typeof data === "string") {
          // The relay asks whether this agent is alive: another agent of this user asks for
          // its name, and is refused while this one answers (edge/src/core/tunnel.ts, answers).
          if (data === HEARTBEAT.ping) return link.send(HEARTBEAT.pong);
          // A heartbeat answer.
          if (pingSentAt !== undefined) this.log.update({ rttMs: Math.round(lastHeard - pingSentAt) });
          pingSentAt = undefined;
          return;
        }
        const counted = { frames: 0 };
        let frames: (Frame | InvalidFrame)[];
        try {
          frames = decodeMessage(data, counted);
        } catch (error) {
          // No stream to blame (not msgpack, or a bad frame that names none): the whole link.
          return broken((error as Error)?.message ?? String(error));
        }
        let total = counted.frames;
        if (!ready) {
          // Frames before and with Ready are outside the session; the rest of this message is in it.
          const at = frames.findIndex((frame) => frame.type === FrameType.Ready || frame.type === FrameType.Refused);
          if (at < 0) return;
          const first = frames[at]!;
          if (first.type === FrameType.Refused) {
            refused = first;
            return;
          }
          if (first.type !== FrameType.Ready) return;
          if ((this.options.tcp || this.options.connect) && !first.tcp) {
            // A relay from before TCP tunnels took the hello as an HTTP tunnel's.
            refused = { type: FrameType.Refused, code: "version-mismatch", message: READY_WITHOUT_TCP };
            link.close(CloseCode.Normal, "the relay does not carry TCP tunnels");
            return finish(refused.message);
          }
          ready = true;
          this.linkReady = true;
          try {
            this.begin(first, link);
          } catch (error) {
            return broken((error as Error)?.message ?? String(error));
          }
          // One heartbeat now, so that the round trip is known before the first period ends.
          ping();
          frames = frames.slice(at + 1);
          total -= at + 1;
        }
        const session = this.current;
        // Stopped meanwhile: the session's streams are gone, and so is what it would serve.
        if (!session) return;
        let rest: (Frame | InvalidFrame)[];
        try {
          rest = session.frames.take(frames, total);
        } catch (error) {
          return broken((error as Error)?.message ?? String(error));
        }
        for (const frame of rest) {
          // It left too much unacknowledged, while these were being served (see begin).
          if (session.frames.ended) break;
          if (frame.type === FrameType.Data) this.log.traffic(frame.bytes.byteLength, 0);
          if (frame.type !== FrameType.Ready && frame.type !== FrameType.Refused) session.forwarder.receive(frame);
        }
      };

      link.onclose = (code, reason) => {
        closeCode = code;
        finish(reason ? `${code} ${reason}` : `code ${code}`);
      };

      let finished = false;
      let closeCode: number | undefined;
      const finish = (why: string) => {
        if (finished) return;
        finished = true;
        this.linkReady = false;
        clearInterval(heartbeat);
        clearTimeout(readyTimer);
        // The streams wait for the next connection, which may resume them.
        if (ready) this.current?.frames.detach();
        resolve({ ready, refused, why, closeCode });
      };
      this.endSession = finish;
    });
  }

  /**
   * The relay said Ready on `link`: go on with the session it resumed, or start a new one (the
   * streams of the previous one end: the relay restarted, or the agent was away too long).
   * @throws {ProtocolError} when the relay's count does not fit what this agent sent.
   */
  private begin(frame: ReadyFrame, link: RelayLink): void {
    const resumed = frame.resumed && this.current?.id === frame.session;
    if (!resumed) {
      this.endStreams(
        this.current ? `the relay could not resume the session (the connection ended: ${this.lastDrop || "unknown"})` : undefined,
      );
      const frames = new FrameSession((flush) => setImmediate(flush));
      // A relay that never acknowledges would have the agent keep every frame it sends: past the
      // bound (unackedLimit), the session ends, what it kept goes, and the agent starts anew.
      frames.onOverflow = (why) => {
        this.log.warn(`the relay ${why}; ending the session and reconnecting`, "unacknowledged");
        const cut = this.link;
        this.endStreams();
        cut?.close(CloseCode.Unacknowledged, `the relay ${why}`);
        this.endSession?.(`the relay ${why}`);
      };
      const send = (f: Frame) => {
        if (f.type === FrameType.Data) this.log.traffic(0, f.bytes.byteLength);
        frames.push(f);
      };
      this.current = {
        id: frame.session,
        frames,
        forwarder: this.service.streams(send, this.log),
      };
    }
    const session = this.current!;
    session.frames.attach((parts) => link.send(parts), resumed ? frame.received : 0);
    const kept = resumed ? `; its streams go on (${session.forwarder.open} open)` : "";
    this.wasUp = true;
    this.markUp?.();
    if (this.service.up) {
      this.service.up(frame, resumed, session.forwarder.open);
      return;
    }
    const { shard = 0, connections = 1 } = this.options;
    if (shard > 0) {
      this.log.info(`tunnel ${frame.name}: connection ${shard + 1} of ${connections} is up${kept}`, "connection-up", {
        name: frame.name,
        connection: shard,
        resumed,
      });
      return;
    }
    this.log.tunnelUp({ name: frame.name, url: frame.url, origin: this.service.label });
    const more = connections > 1 ? ` (connection 1 of ${connections})` : "";
    this.log.result(`tunnel ${frame.name} is up: ${frame.url} -> ${this.service.label}${kept}${more}`, "up", {
      name: frame.name,
      url: frame.url,
      origin: this.service.label,
      resumed,
      ...(connections > 1 ? { connection: 0, connections } : {}),
    });
    if (frame.notice && frame.notice !== this.noticed) {
      this.noticed = frame.notice;
      this.log.warn(`tunnel ${frame.name}: ${frame.notice}`, "relay-notice", { name: frame.name });
    }
    if (frame.url !== this.announcedPort && announcePublicPort(frame.name, frame.url, this.options.rules.allowIp, this.log)) {
      this.announcedPort = frame.url;
    }
    if (frame.open && !this.warnedOpen) {
      this.warnedOpen = true;
      this.log.warn(
        "this relay is open: anyone who can reach it can open tunnels and claim names (its owner can require tokens; see the README's Security section)",
      );
    }
  }

  /** Ends the session's streams: their origin requests and WebSockets are abandoned. */
  private endStreams(why?: string): void {
    this.current?.forwarder.abortAll(why);
    this.current?.frames.end();
    this.current = undefined;
  }
}

/** Why an agent --tcp or connect stops at a Ready without `tcp` (the frame is the agent's own). */
const READY_WITHOUT_TCP = "its Ready does not say tcp: it took the hello for an HTTP tunnel's";

/**
 * The error for a refusal. `tcp`: the relay of an agent --tcp or a visitor's `agent connect`,
 * which a relay from before TCP tunnels does not serve: it answers the hello of --tcp as an
 * HTTP tunnel's (a Ready without tcp), and refuses a Connect, a frame it does not know, as a
 * bad hello (see CONNECTOR_ROLE). Either way the relay needs upgrading, not the agent.
 */
function refusal(frame: RefusedFrame, tcp?: { relay: URL; version: string }): AgentError {
  const readyWithoutTcp = frame.code === "version-mismatch" && frame.message === READY_WITHOUT_TCP;
  const connectUnknown = frame.code === "bad-hello" && frame.message.includes("must be a Hello");
  if (tcp && (readyWithoutTcp || connectUnknown)) {
    const how = readyWithoutTcp ? READY_WITHOUT_TCP : `it took the Connect for an agent's hello ("${frame.message}")`;
    return new AgentError(
      "refused",
      `the relay at ${tcp.relay.origin} does not carry TCP tunnels: it is older than this agent (${tcp.version}); ${how}`,
      "upgrade the relay (redeploy it, or update the package that runs `agent relay`); both the tunnel's agent and `agent connect` need it",
    );
  }
  const hints: Record<string, string> = {
    "name-taken": "pick another name with --name, or leave it out for a random one",
    "name-in-use":
      "agents of one user on one machine share their claim to a name (~/.config/burrow/claims): stop the other agent first, or give this one another --name",
    "name-owned": "pass the token that owns this name (--token-file or BURROW_TOKEN), or choose another --name",
    "name-reserved": "the relay keeps this name for itself: choose another --name",
    "too-many-tunnels": "stop one of this token's other tunnels, or ask the relay's owner for a higher limit",
    unauthorized: "ask the relay's owner for its token and pass it with --token (or BURROW_TOKEN)",
    "version-mismatch": "the agent and relay must speak the same protocol version",
    "agent-offline": "start the tunnel's agent (`agent --tcp PORT --name NAME`) on the machine it serves, then connect again",
    "not-tcp": "open the tunnel's URL in a browser; `agent connect` is for tunnels started with --tcp",
    forbidden: "the tunnel's owner admits listed addresses only (--allow-ip): ask them to add yours",
  };
  if (frame.code === "unauthorized" && frame.message.includes("key")) {
    hints.unauthorized = "ask the tunnel's owner for its connect key; pass it with --key-file FILE or BURROW_CONNECT_KEY";
  }
  return new AgentError("refused", `the relay refused the tunnel: ${frame.message}`, hints[frame.code] ?? "");
}

/** What to do when nothing listens at a relay on this machine. */
function notRunningHint(relay: URL): string {
  // `npm run relay` exists only in a clone of the repository; a package user deploys one.
  return runsFromClone()
    ? `start one in this clone with \`npm run relay\` (it listens on http://localhost:8787), or point --relay (BURROW_RELAY) at a running relay`
    : `no relay runs at ${relay.origin}${relay.origin === "http://localhost:8787" ? " (the default --relay)" : ""}: deploy your relay (see "Deploy your relay" in Burrow's README) and pass its URL with --relay https://... (or BURROW_RELAY)`;
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}
