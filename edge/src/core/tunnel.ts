import {
  CloseCode,
  CONNECT_PATH,
  decodeMessage,
  encodeFrame,
  type Frame,
  FrameType,
  HEARTBEAT,
  type HeaderList,
  type HelloFrame,
  HOP_BY_HOP,
  type InvalidFrame,
  ProtocolError,
  SESSION_HEADER,
  SESSION_PATH,
  unackedLimit,
} from "@burrow/protocol";
import { type Admission, admit, identify, type NameRecord, parseTokens, type Tokens } from "./admission.ts";
import { SignedBodies } from "./bodies.ts";
import { visitorKey } from "./cidr.ts";
import { EdgeError, isTeardownNoise } from "./errors.ts";
import { INTERNAL, isInternal, SHARDS_HEADER, VISIT_URL, type VisitorHead, withHeaders } from "./headers.ts";
import type { Link, ShardAdmission, TunnelHost, TunnelPeer } from "./host.ts";
import { LIVENESS_PROBE_MS, RateMeter } from "./limits.ts";
import { PollingLink } from "./polling.ts";
import { RuleSet } from "./rules.ts";
import { AgentSession, sessionId } from "./session.ts";
import type { RelaySettings } from "./settings.ts";
import { pickShard, shardObjectName } from "./shards.ts";
import { checkShare, Tally } from "./shares.ts";
import { SocketRelay, type VisitorAttachment } from "./sockets.ts";
import { StreamTable, type Verdict } from "./streams.ts";
import { cancelTimer } from "./timers.ts";

/** What each agent socket remembers across hibernation (`serializeAttachment`, max 2 KiB). */
type Attachment =
  | { phase: "hello"; name: string; url: string; shard?: number }
  | {
      phase: "ready";
      name: string;
      /** Which of the tunnel's objects this is (see shards.ts); absent: 0. */
      shard?: number;
      url: string;
      owner: string;
      label: string;
      session: string;
      /** The session's counts when it was last quiescent (see FrameSession.snapshot). */
      counts?: { sent: number; received: number };
      /** A shard k > 0: the session of shard 0 it was admitted under (see evictStale). */
      primary?: string;
    }
  | VisitorAttachment;
type HelloAttachment = Extract<Attachment, { phase: "hello" }>;
type ReadyAttachment = Extract<Attachment, { phase: "ready" }>;

/** On an open relay, a name stays reserved this long for an agent that dropped uncleanly. */
const NAME_GRACE_MS = 60_000;
/**
 * A visitor who arrives while the agent reconnects (a proxy cut its connection, say) waits
 * this long for it instead of getting an error: agents retry within a second after a drop.
 */
const AGENT_RETURN_WAIT_MS = 10_000;
/** While an agent is connected its name's last use is refreshed this often (an alarm). */
const REFRESH_MS = 86_400_000;
const AGENT_TAG = "agent";
/** A session's counts are written this long after it went quiet (see use). */
const PERSIST_MS = 1000;

/** Storage keys: the name's owner (a hash) and the visitor rules of its connected agent. */
const NAME_KEY = "name";
const RULES_KEY = "rules";
/** Shard 0: the shards whose agent is connected (see shardState). */
const SHARDS_KEY = "shards";

/**
 * One tunnel (or one shard of it: see shards.ts): holds its agent's connection and turns each
 * visitor request into a stream of frames on it. Who may connect and who owns the name is
 * decided in admission.ts, who may visit in rules.ts, with the limits of settings.ts; this
 * class puts them together on what its host gives it (see host.ts): a Durable Object's
 * hibernating sockets, storage and alarms on Cloudflare, memory and a data directory self-hosted.
 */
export class TunnelCore implements TunnelPeer {
  private readonly host: TunnelHost;
  private readonly settings: RelaySettings;
  private readonly sockets: SocketRelay;
  private readonly streams: StreamTable;
  private readonly bootedAt = Date.now();
  private tokens: Promise<Tokens> | undefined;
  private lastStreamId = Math.floor(Math.random() * 0x7fff_ffff);
  /** How fast each agent link sends (frames, bytes), against the limits. */
  private readonly meters = new WeakMap<Link, { frames: RateMeter; bytes: RateMeter }>();
  /** Visitors waiting for a dropped agent to come back (see agentBack). */
  private readonly returning = new Set<(agent: AgentSession) => void>();
  /**
   * The agent's session: what its streams belong to, carried by one link at a time and waiting
   * for it after a cut. Set by hello(); after a wake from hibernation, found again from the
   * ready link's attachment by agent().
   */
  private current: AgentSession | undefined;
  /** Attachments as last set or read (see attachment). */
  private readonly attachments = new WeakMap<Link, Attachment>();
  /** Links the relay closed or saw close, whose attachments may still say "ready". */
  private readonly ended = new WeakSet<Link>();
  /** Agents on the HTTPS transport, by session id (in memory: see PollingLink). */
  private readonly sessions = new Map<string, PollingLink>();
  /** The visitor rules of the connected agent; undefined until read from storage. */
  private rules: RuleSet | null | undefined;
  /** Counts changes of `rules`, so a request checked under older ones is checked again. */
  private rulesGeneration = 0;
  /**
   * Visitor requests that passed the rules and wait for the agent to come back: they count
   * against MAX_STREAMS_PER_TUNNEL and their visitor's share, as streams.
   */
  private readonly admitted = new Tally();
  /** Bodies read before their check, in a pool of their own (see bodies.ts). */
  private readonly signedBodies: SignedBodies;
  /** Links asked whether they are alive (see answers), and what to call when they say so. */
  private readonly probes = new Map<Link, (alive: boolean) => void>();
  /** Hellos are judged one at a time: two racing for a name must not both win it. */
  private hellos: Promise<unknown> = Promise.resolve();

  constructor(host: TunnelHost) {
    this.host = host;
    this.settings = host.settings;
    this.sockets = new SocketRelay(
      host.links,
      (socket, frame) => this.sendFrame(socket, frame),
      this.settings.maxWaitingMessages,
    );
    this.streams = new StreamTable(
      host,
      (socket, frame) => this.sendFrame(socket, frame),
      (id, protocol, visitor) => this.sockets.accept(id, protocol, visitor),
    );
    this.signedBodies = new SignedBodies(this.settings);
  }

  /**
   * Called once by the host before anything else (on Cloudflare inside blockConcurrencyWhile).
   * A restart (a deploy, an eviction, a self-hosted relay's restart) says nothing to the links
   * it drops: a record still marked connected with no agent link alive is from before, and
   * counts as a drop now (the name waits for its agent as after a cut, and lapses after
   * NAME_TTL_DAYS from here).
   */
  async start(): Promise<void> {
    const record = await this.host.storage.get<NameRecord>(NAME_KEY);
    if (!record?.connected) return;
    const alive = this.host.links
      .byTag(AGENT_TAG)
      .some((s) => (s.deserializeAttachment() as Attachment | null)?.phase === "ready");
    if (alive) return;
    const now = Date.now();
    await this.host.storage.put(NAME_KEY, { ...record, connected: false, dropped: true, lastUsed: now });
    await this.host.storage.setAlarm(now + this.settings.resumeMs + 1000);
  }

  async fetch(input: Request | string, init?: RequestInit): Promise<Response> {
    const request = typeof input === "string" ? new Request(input, init) : input;
    try {
      if (request.url === VISIT_URL) return await this.visit(request);
      const url = new URL(request.url);
      if (url.pathname === CONNECT_PATH) return this.accept(request, url);
      if (url.pathname === SESSION_PATH) return await this.session(request, url);
      return await this.visit(request);
    } catch (error) {
      if (error instanceof EdgeError) return error.toResponse();
      console.error(`tunnel ${request.headers.get(INTERNAL.tunnel)}: fetch failed`, error);
      return new EdgeError(500, "relay-error", "The relay failed to handle this request; it has been logged.").toResponse();
    }
  }

  /** The Worker validated the name and the upgrade; the hello decides whether the agent stays. */
  private accept(request: Request, url: URL): Response {
    const { link: server, response } = this.host.links.upgrade([AGENT_TAG]);
    this.setAttachment(server, {
      phase: "hello",
      shard: this.learnShard(url),
      name: url.searchParams.get("name") ?? "",
      url: request.headers.get(INTERNAL.publicUrl) ?? "",
    } satisfies Attachment);
    this.helloDeadline(server);
    return response;
  }

  /**
   * A connection that never says hello is closed: it would hold a socket (and its memory in
   * the runtime) for nothing. The timer keeps this object awake that long, no longer.
   */
  private helloDeadline(link: Link): void {
    setTimeout(() => {
      if (this.ended.has(link) || (link.deserializeAttachment() as Attachment | null)?.phase !== "hello") return;
      this.close(link, CloseCode.HelloTimeout, `no hello within ${this.settings.helloTimeoutMs / 1000}s`);
    }, this.settings.helloTimeoutMs);
  }

  /** The HTTPS transport: open a session, carry frames both ways, close it. */
  private async session(request: Request, url: URL): Promise<Response> {
    const id = request.headers.get(SESSION_HEADER);
    if (request.method === "POST" && id === null) {
      // A relay with tokens opens sessions for its agents only (the hello checks again).
      const tokens = await this.tokenList();
      if (tokens.entries.length > 0 || tokens.error) {
        const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1] ?? "";
        if (!(await identify(tokens, bearer))) {
          throw new EdgeError(401, "unauthorized", "This relay requires a token: pass --token-file, --token or BURROW_TOKEN.");
        }
      }
      const link = new PollingLink((ended, code, reason) => {
        this.sessions.delete(ended.id);
        this.linkClosed(ended, code, reason);
      }, unackedLimit(this.settings.maxStreams).bytes);
      this.setAttachment(link, {
        phase: "hello",
        shard: this.learnShard(url),
        name: url.searchParams.get("name") ?? "",
        url: request.headers.get(INTERNAL.publicUrl) ?? "",
      } satisfies Attachment);
      this.sessions.set(link.id, link);
      this.helloDeadline(link);
      return Response.json({ session: link.id }, { status: 201, headers: { "Cache-Control": "no-store" } });
    }
    const link = id === null ? undefined : this.sessions.get(id);
    if (!link) {
      throw new EdgeError(404, "not-found", "No such session: it ended, or the relay restarted. Open a new one.");
    }
    const number = (name: string) => {
      const value = Number(url.searchParams.get(name));
      if (!Number.isSafeInteger(value) || value < 0) throw new EdgeError(400, "bad-request", `?${name}= must be a count`);
      return value;
    };
    if (request.method !== "DELETE") this.probes.get(link)?.(true);
    switch (request.method) {
      case "GET":
        return link.poll(number("ack"), number("wait"), request.signal);
      case "POST": {
        const body = new Uint8Array(await request.arrayBuffer());
        if (link.receive(number("seq")) === "new") await this.fromAgent(link, body);
        return new Response(null, { status: 204 });
      }
      case "DELETE":
        link.closedByAgent(number("code"), url.searchParams.get("reason") ?? "");
        return new Response(null, { status: 204 });
      default:
        throw new EdgeError(405, "bad-request", `${request.method} is not used on ${SESSION_PATH}`);
    }
  }

  private async visit(request: Request): Promise<Response> {
    const visited = visitorHead(request.headers);
    if (!visited.asks || visited.shard !== 0) return this.serve(request, visited);
    // The Worker asks which shards are live (see ShardMap): said on the answer, whatever it is.
    let response: Response;
    try {
      response = await this.serve(request, visited);
    } catch (error) {
      if (!(error instanceof EdgeError)) throw error;
      response = error.toResponse();
    }
    const live = (await this.liveShards()).join(",");
    return withHeaders(this.host, response, (headers) => headers.set(SHARDS_HEADER, live));
  }

  private async serve(request: Request, visited: ReturnType<typeof visitorHead>): Promise<Response> {
    const { tunnel, path, upgrade, clientIp, relayUrl, contentLength } = visited;
    this.shard = visited.shard;
    // A shard whose agent's connection is not here (it left, or is on its way back, since the
    // Worker last asked) hands new visitors on, unread, once: from a shard to shard 0, from
    // shard 0 to a shard whose agent is here. Its streams in flight wait for their session.
    if (!visited.forwarded && !this.agent()) {
      if (visited.shard > 0) return this.forward(request, visited, 0);
      const others = visited.shard === 0 ? await this.shardSet() : undefined;
      if (others?.size) return this.forward(request, visited, pickShard([...others]));
    }
    let headers = visited.headers;
    let body: ReadableStream<Uint8Array> | Uint8Array | null = request.body;
    const from = visitorKey(clientIp);
    let agent: AgentSession | undefined;
    let admitted = false;
    /** Bytes of a body read for its check, held until it is forwarded (see SignedBodies). */
    let held = 0;
    try {
      // The rules first: a visitor they turn away never costs the agent a frame, nor takes a
      // stream (a body read for its check has a pool of its own). Checked again when the rules
      // changed meanwhile (an agent that came back with others): the request goes to that
      // agent, under its rules.
      for (let checkedUnder = -1; checkedUnder !== this.rulesGeneration; ) {
        checkedUnder = this.rulesGeneration;
        const rules = await this.visitorRules();
        if (rules) {
          const checked = await rules.check({ tunnel, headers, clientIp, from, body, contentLength }, this.signedBodies);
          if (checked.body instanceof Uint8Array && !(body instanceof Uint8Array)) held = checked.body.byteLength;
          headers = checked.headers;
          body = checked.body;
        }
        if (!admitted) {
          this.admit(from);
          this.admitted.add(from);
          admitted = true;
        }
        agent = this.agent() ?? (await this.agentBack());
      }
    } catch (error) {
      // Refused after its body was read (no stream free, or the rules changed): not held now.
      this.signedBodies.give(held);
      throw error;
    } finally {
      if (admitted) this.admitted.remove(from);
    }
    if (!agent) {
      this.signedBodies.give(held);
      throw new EdgeError(
        502,
        "agent-offline",
        `No agent is connected for tunnel "${tunnel}". Start one next to your server: npx -p burrow-agent agent --port 8000 --name ${tunnel} --relay ${relayUrl || "<this relay's URL>"}`,
      );
    }
    const id = this.nextStreamId();
    // Cookies may name the tunnel's own host at most (see narrowCookie); the path form's
    // Worker then drops Domain altogether (see scopeCookie).
    const base = this.settings.baseDomain;
    const response = this.streams.open(id, agent, request.method, upgrade, base ? `${tunnel}.${base}` : "", from);
    // Before the head, only the signal tells that the visitor left (compatibility flag
    // enable_request_signal; see awaitHead); after it, the response body's writer does.
    // The agent opens its own WebSocket to the origin when it sees this.
    if (upgrade) headers.push(["upgrade", "websocket"]);
    this.sendFrame(agent, { type: FrameType.RequestHead, stream: id, method: request.method, path, headers });
    const timeoutMs = this.settings.responseTimeoutMs;
    if (body === null) {
      // Most requests: nothing to pump, so End goes with the head.
      this.sendFrame(agent, { type: FrameType.End, stream: id });
      this.streams.awaitHead(id, timeoutMs, tunnel, request.signal);
      return response;
    }
    this.host.waitUntil(
      this.streams.forwardBody(id, body).then(() => {
        this.signedBodies.give(held);
        this.streams.awaitHead(id, timeoutMs, tunnel, request.signal);
      }),
    );
    return response;
  }

  /**
   * Takes a stream for a visitor, within the tunnel's streams and the visitor's share of them.
   * @throws {EdgeError} 503 too-many-streams or too-many-from-address, with Retry-After.
   */
  private admit(from: string | undefined): void {
    const sockets = this.sockets.count;
    const open = this.streams.size + sockets + this.admitted.total;
    if (open >= this.settings.maxStreams) {
      throw new EdgeError(
        503,
        "too-many-streams",
        `This tunnel has ${open} requests and WebSockets open, its limit (MAX_STREAMS_PER_TUNNEL); retry in a moment.`,
        { "Retry-After": "1" },
      );
    }
    // Fewer open than a share: no visitor can hold its share yet (and no socket is looked up).
    if (open < this.settings.maxStreamsPerVisitor) return;
    const held = this.streams.heldBy(from) + (sockets > 0 ? this.sockets.heldBy(from) : 0) + this.admitted.of(from);
    checkShare(from, held, this.settings.maxStreamsPerVisitor, "requests and WebSockets open");
  }

  /** Sends a visitor to shard `to` of its tunnel, marked so that it goes no further. */
  private forward(request: Request, head: VisitorHead, to: number): Promise<Response> {
    const headers = new Headers(request.headers);
    if (headers.has(INTERNAL.head)) {
      headers.set(INTERNAL.head, JSON.stringify({ ...head, shard: to, forwarded: true, asks: undefined }));
    } else {
      headers.set(INTERNAL.shard, `${to}!`);
    }
    return this.host.tunnel(shardObjectName(head.tunnel, to)).fetch(new Request(request, { headers }));
  }

  /** The connected agent's rules, from memory or (after a wake from hibernation) storage. */
  private async visitorRules(): Promise<RuleSet | null> {
    if (this.rules === undefined) {
      const stored = await this.host.storage.get<HelloFrame["rules"]>(RULES_KEY);
      this.rules = stored ? new RuleSet(stored) : null;
    }
    return this.rules;
  }

  /**
   * The agent, once it is back, if it dropped without saying goodbye moments ago (or was
   * connected when this relay restarted); undefined if it does not return within
   * AGENT_RETURN_WAIT_MS.
   */
  private async agentBack(): Promise<AgentSession | undefined> {
    const record = await this.host.storage.get<NameRecord & { dropped?: boolean }>(NAME_KEY);
    const now = Date.now();
    // A shard keeps no record: its visitors wait while its session waits for its agent.
    const since =
      this.shard > 0
        ? this.current
          ? now
          : undefined
        : record?.connected
          ? this.bootedAt
          : record?.dropped
            ? record.lastUsed
            : undefined;
    if (since === undefined || now > since + AGENT_RETURN_WAIT_MS) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(
        () => {
          this.returning.delete(waiter);
          resolve(undefined);
        },
        since + AGENT_RETURN_WAIT_MS - now,
      );
      const waiter = (agent: AgentSession) => {
        clearTimeout(timer);
        resolve(agent);
      };
      this.returning.add(waiter);
    });
  }

  /** Stream ids are unique per Durable Object instance; the random start keeps them unique across wake-ups. */
  private nextStreamId(): number {
    const id = this.lastStreamId >= 0xffff_fffe ? 1 : this.lastStreamId + 1;
    this.lastStreamId = id;
    return id;
  }

  /** A message on one of this tunnel's links. Text is only ever a heartbeat, which the host answers itself. */
  async message(socket: Link, message: string | ArrayBuffer): Promise<void> {
    const attachment = this.attachment(socket);
    if (attachment.phase === "visitor") {
      // While the agent is away its session keeps the visitor's messages, within their credit.
      const agent = this.agent() ?? this.current;
      if (agent) this.sockets.fromVisitor(agent, socket, attachment.stream, message);
      else this.sockets.closeAll("the tunnel's agent is not connected");
      return;
    }
    this.probes.get(socket)?.(true);
    if (typeof message === "string") return;
    await this.fromAgent(socket, new Uint8Array(message));
  }

  /** One message of frames from an agent, on either transport. */
  private async fromAgent(link: Link, message: Uint8Array): Promise<void> {
    if (this.ended.has(link)) return;
    const attachment = this.attachment(link) as Exclude<Attachment, VisitorAttachment>;
    try {
      const counted = { frames: 0 };
      const frames = decodeMessage(message, counted);
      if (!this.withinRate(link, frames.length, message.byteLength)) return;
      if (attachment.phase === "ready") {
        const session = this.agent();
        if (session?.link !== link) return; // a link the session has left
        for (const frame of session.frames.take(frames, counted.frames)) {
          if (session.frames.ended) break; // it left too much unacknowledged (see use)
          this.receive(session, frame);
        }
        return;
      }
      // Only the first frame is a hello; what follows it in the same message is served if the
      // hello was accepted and dropped unread if not (a message packed with hellos costs one).
      const [first, ...rest] = frames;
      const judged = this.hellos.then(() => this.hello(link, first, attachment));
      this.hellos = judged.catch(() => undefined);
      const session = await judged;
      if (!session) return;
      for (const frame of session.frames.take(rest, counted.frames - 1)) {
        if (session.frames.ended) break;
        this.receive(session, frame);
      }
    } catch (error) {
      if (error instanceof ProtocolError) {
        console.warn(`tunnel ${attachment.name}: closing the agent's connection: ${error.message}`);
        this.close(link, CloseCode.ProtocolError, `protocol error: ${error.message}`);
        const session = this.current;
        if (session?.link === link) {
          this.endSession(session, `The agent for tunnel "${attachment.name}" broke the protocol: ${error.message}`);
        }
      } else if (!isTeardownNoise(error)) {
        console.error(`tunnel ${attachment.name}: a message from the agent failed`, error);
      }
    } finally {
      this.streams.settle();
    }
  }

  /** Counts an agent's message against the frame and byte rates; closes the link past them. */
  private withinRate(link: Link, frames: number, bytes: number): boolean {
    const now = Date.now();
    let meter = this.meters.get(link);
    if (!meter) {
      meter = {
        frames: new RateMeter(this.settings.maxFramesPerSecond, 2, now),
        bytes: new RateMeter(this.settings.maxBytesPerSecond, 2, now),
      };
      this.meters.set(link, meter);
    }
    const framesOk = meter.frames.take(frames, now);
    const bytesOk = meter.bytes.take(bytes, now);
    if (framesOk && bytesOk) return true;
    const what = framesOk
      ? `${this.settings.maxBytesPerSecond} bytes a second (MAX_AGENT_BYTES_PER_SECOND)`
      : `${this.settings.maxFramesPerSecond} frames a second (MAX_AGENT_FRAMES_PER_SECOND)`;
    const attachment = link.deserializeAttachment() as { name?: string } | null;
    console.warn(`tunnel ${attachment?.name}: closing the agent's connection: it sent more than ${what}`);
    this.close(link, CloseCode.RateLimited, `sent more than ${what}`);
    const session = this.current;
    if (session?.link === link) this.endSession(session, "The tunnel's agent sent faster than the relay allows.");
    return false;
  }

  /** The peer of one of this tunnel's links closed it. */
  closed(socket: Link, code: number, reason: string): void {
    this.linkClosed(socket, code, reason);
  }

  /** One of this tunnel's links failed. */
  errored(socket: Link, error: unknown): void {
    if (!isTeardownNoise(error)) console.warn("socket error", error);
    this.linkClosed(socket, 1006, "socket error");
  }

  /**
   * While an agent is connected, its name's last use moves forward. Once its agent has been
   * gone longer than RESUME_SECONDS, the tunnel's visitor rules (webhook secrets among them)
   * are deleted; once unused for NAME_TTL_DAYS, the name is.
   */
  async alarm(): Promise<void> {
    const record = await this.host.storage.get<NameRecord>(NAME_KEY);
    if (!record) {
      // A shard (which keeps no name): its rules leave once its agent has not come back.
      if (!(this.agent() ?? this.current)) await this.host.storage.delete(RULES_KEY);
      return;
    }
    const now = Date.now();
    if (this.agent() ?? this.current) {
      await this.host.storage.put(NAME_KEY, { ...record, lastUsed: now });
      await this.host.storage.setAlarm(now + REFRESH_MS);
      return;
    }
    const expires = record.lastUsed + this.settings.nameTtlMs;
    if (now >= expires) {
      await this.host.storage.deleteAll();
      return;
    }
    if (now >= record.lastUsed + this.settings.resumeMs) {
      this.rules = null;
      this.rulesGeneration++;
      await this.host.storage.delete(RULES_KEY);
      await this.host.storage.setAlarm(expires);
    } else {
      await this.host.storage.setAlarm(Math.min(expires, record.lastUsed + this.settings.resumeMs + 1000));
    }
  }

  private linkClosed(socket: Link, code: number, reason: string): void {
    const attachment = socket.deserializeAttachment() as Attachment | null;
    if (attachment?.phase !== "visitor") {
      this.dropped(socket, code, reason);
      return;
    }
    this.sockets.closedByVisitor(this.agent() ?? this.current, attachment.stream, code, reason);
    this.close(socket, code === 1005 || code === 1006 ? 1000 : code, reason);
  }

  /** One frame from a ready agent; a frame that breaks the protocol resets its stream only. */
  private receive(socket: AgentSession, frame: Frame | InvalidFrame): void {
    let verdict: Verdict;
    switch (frame.type) {
      case "invalid":
        verdict = { violation: frame.error.message };
        break;
      case FrameType.ResponseHead:
        verdict = this.streams.head(frame, socket);
        break;
      case FrameType.Data:
        verdict = this.streams.data(frame.stream, socket, frame.bytes);
        break;
      case FrameType.End:
        verdict = this.streams.end(frame.stream, socket);
        break;
      case FrameType.Reset:
        this.streams.reset(frame.stream, socket, frame.code, frame.message);
        return; // a reset of a stream already gone needs no answer
      case FrameType.Credit: {
        verdict = this.streams.granted(frame.stream, socket, frame.bytes);
        if (verdict === "gone") verdict = this.sockets.granted(socket, frame.stream, frame.bytes);
        if (verdict === "gone") return; // credit may trail a stream that just ended
        break;
      }
      case FrameType.WsMessage:
        verdict = this.sockets.fromAgent(socket, frame) ? "ok" : "gone";
        break;
      case FrameType.WsClose:
        this.sockets.closedByOrigin(frame);
        return; // the visitor may have closed first
      default:
        throw new ProtocolError("malformed-frame", `the relay does not accept a frame of type ${frame.type} from an agent`);
    }
    if (verdict === "ok") return;
    if (verdict === "gone") {
      // Frames for a stream the relay already finished (the visitor left) are expected while the
      // agent catches up with the Reset it was sent.
      this.sendFrame(socket, {
        type: FrameType.Reset,
        stream: frame.stream,
        code: "cancelled",
        message: "this stream is no longer open",
      });
      return;
    }
    const name = (socket.link?.deserializeAttachment() as { name?: string } | null | undefined)?.name;
    console.warn(`tunnel ${name}: stream ${frame.stream}: the agent broke the protocol: ${verdict.violation}`);
    if (this.streams.has(frame.stream)) this.streams.violated(frame.stream, verdict.violation);
    else {
      this.sockets.closedByOrigin({ type: FrameType.WsClose, stream: frame.stream, code: 1011, reason: "protocol error" });
      this.sendFrame(socket, { type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: verdict.violation });
    }
  }

  /** Judges the hello; returns whether the link is now the tunnel's agent. */
  /**
   * Judges the hello. Accepted, the link carries the agent's session from now on: the one it
   * asks to resume, when that is still here, its own and where the agent says it got to, or
   * else a new one (a previous session's streams then end). Returns the session, or undefined.
   */
  private async hello(
    socket: Link,
    frame: Frame | InvalidFrame | undefined,
    attachment: HelloAttachment,
  ): Promise<AgentSession | undefined> {
    const tokens = await this.tokenList();
    const previous = this.agent() ?? this.current;
    const live = previous?.link && previous.link !== socket ? previous.link : undefined;
    let verdict: Admission;
    /** A shard enforces the rules of the tunnel's shard 0, whatever its own hello says. */
    let shardRules: HelloFrame["rules"] | undefined;
    /** A shard: the session of shard 0 that admitted it. */
    let primary: string | undefined;
    if (frame?.type !== FrameType.Hello) {
      verdict = { ok: false, code: "bad-hello", message: "the first frame on a connection must be a Hello" };
    } else if (RuleSet.invalid(frame.rules).length > 0) {
      verdict = {
        ok: false,
        code: "bad-hello",
        message: `--allow-ip ${RuleSet.invalid(frame.rules)[0]} is not an address or CIDR range`,
      };
    } else if (frame.name !== attachment.name) {
      // The connect URL chose this object (and, for a shard, the shard 0 that judges it); a
      // hello for another name would be admitted by one tunnel and act on another's.
      verdict = {
        ok: false,
        code: "bad-hello",
        message: `the hello asks for tunnel ${JSON.stringify(frame.name)} but the connection was opened for ${JSON.stringify(attachment.name)}`,
      };
    } else {
      if (attachment.shard) {
        const answer = await this.primary(attachment.name).admitShard(frame, attachment.shard, attachment.name);
        verdict = answer.admission;
        shardRules = answer.rules;
        primary = answer.primary;
      } else {
        verdict = await admit({
          hello: frame,
          requested: attachment.name,
          tokens,
          record: await this.host.storage.get<NameRecord>(NAME_KEY),
          liveOwner: live ? previous?.owner : undefined,
          now: Date.now(),
          bootedAt: this.bootedAt,
          policy: { nameTtlMs: this.settings.nameTtlMs, graceMs: NAME_GRACE_MS, allowPunycode: this.settings.allowPunycodeNames },
        });
      }
    }
    // Open relay: a new session (not a resume) of the same claim while the holder's connection
    // is open. Two agents of one user on one machine share the claim file (claims.ts): the
    // newer one must not silently take the name over, so it is refused while the holder
    // answers. A holder that crashed closed its socket and is gone from `live` already; one
    // whose connection is half-open (the relay has not noticed it die) does not answer within
    // LIVENESS_PROBE_MS and is replaced, as before, so an owner's restart is never locked out.
    if (
      verdict.ok &&
      verdict.replaces &&
      live &&
      verdict.owner.startsWith("claim:") &&
      frame?.type === FrameType.Hello &&
      !(frame.resume !== null && previous === this.current && frame.resume.session === previous?.id) &&
      (await this.answers(live))
    ) {
      verdict = {
        ok: false,
        code: "name-in-use",
        message: `the name "${attachment.name}" is in use by another agent of yours on this relay: stop it, or pick another --name`,
      };
    }
    // A waiting session holds its place in the token's count already.
    const counted = verdict.ok && previous?.owner === verdict.owner;
    if (verdict.ok && !counted && !attachment.shard && verdict.owner.startsWith("token:") && frame?.type === FrameType.Hello) {
      verdict = await this.holdForToken(verdict, attachment.name);
    }
    // The link may have dropped while the hello was judged.
    if (this.ended.has(socket)) {
      if (verdict.ok && !counted) this.host.waitUntil(this.releaseForToken(verdict.owner, attachment.name));
      return undefined;
    }
    if (!verdict.ok) {
      this.sendAlone(socket, { type: FrameType.Refused, code: verdict.code, message: verdict.message });
      // The reason too says why, for a client that reads no Refused frame (close truncates it).
      this.close(socket, CloseCode.Refused, `${verdict.code}: ${verdict.message}`);
      return undefined;
    }
    const hello = frame as HelloFrame;
    const resume = hello.resume;
    const resumed =
      resume !== null &&
      previous !== undefined &&
      previous === this.current &&
      resume.session === previous.id &&
      previous.owner === verdict.owner &&
      previous.frames.canResume(resume.received);
    if (live) {
      const why = resumed
        ? "the same agent resumed its session on a newer connection"
        : verdict.owner.startsWith("token:")
          ? "replaced by a newer connection holding the same token"
          : "replaced by a newer connection of the same agent";
      this.close(live, CloseCode.Replaced, why);
    }
    if (previous && !resumed) {
      this.endSession(previous, `The agent for tunnel "${hello.name}" reconnected as a new session; retry the request.`);
    }
    // Visitor WebSockets of a session this object no longer knows (it was evicted meanwhile)
    // have nobody to talk to.
    if (!resumed) this.sockets.closeAll("the tunnel's agent reconnected as a new session");
    const session = resumed
      ? previous
      : new AgentSession(sessionId(), verdict.owner, verdict.label, unackedLimit(this.settings.maxStreams));
    this.current = session;
    this.setAttachment(socket, {
      phase: "ready",
      shard: attachment.shard,
      name: attachment.name,
      url: attachment.url,
      owner: verdict.owner,
      label: verdict.label,
      session: session.id,
      primary,
    } satisfies Attachment);
    const now = Date.now();
    const ruleList = shardRules ?? hello.rules;
    const rules = new RuleSet(ruleList);
    this.rules = rules.empty ? null : rules;
    this.rulesGeneration++;
    await Promise.all([
      // A shard keeps no name: shard 0 does.
      attachment.shard
        ? undefined
        : this.host.storage.put(NAME_KEY, {
            owner: verdict.owner,
            label: verdict.label,
            lastUsed: now,
            connected: true,
          } satisfies NameRecord),
      rules.empty ? this.host.storage.delete(RULES_KEY) : this.host.storage.put(RULES_KEY, ruleList),
      attachment.shard ? undefined : this.host.storage.setAlarm(now + REFRESH_MS),
      // Shard 0, a new session: the shards of the one before it leave (see evictStale).
      attachment.shard || resumed ? undefined : this.evictShards(attachment.name, session.id),
    ]);
    if (this.ended.has(socket)) return undefined;
    // Ready travels outside the session, alone; what the agent had not received follows it.
    this.sendAlone(socket, {
      type: FrameType.Ready,
      name: attachment.name,
      url: attachment.url,
      open: tokens.entries.length === 0,
      session: session.id,
      resumed,
      received: session.frames.received,
    });
    this.use(session, socket, resumed ? resume.received : 0);
    if (attachment.shard) this.reportShard(attachment.name, attachment.shard, true);
    for (const waiter of this.returning) waiter(session);
    this.returning.clear();
    return session;
  }

  /**
   * Whether the agent on `link` is alive: asked with a ping (an agent answers with a pong; on
   * the HTTPS transport the waiting poll is answered and the agent's next poll is the sign),
   * and any message from it within LIVENESS_PROBE_MS counts. An agent from before the ping
   * was answered stays silent and is taken for dead: it is replaced, as it always was.
   */
  private answers(link: Link): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (alive: boolean) => {
        clearTimeout(timer);
        if (this.probes.get(link) === done) this.probes.delete(link);
        resolve(alive);
      };
      const timer = setTimeout(() => done(false), LIVENESS_PROBE_MS);
      // Its close ends the wait at once (see dropped).
      this.probes.set(link, done);
      try {
        if (link instanceof PollingLink) link.nudge();
        else link.send(HEARTBEAT.ping);
      } catch {
        done(false); // the socket is closing already
      }
    });
  }

  /** `link` carries `session` from now on (it had received `peerReceived` of its frames). */
  private use(session: AgentSession, link: Link, peerReceived: number): void {
    session.attach(link, peerReceived);
    // Idle and with nothing kept, the counts are all a wake from hibernation needs. Written
    // PERSIST_MS after the session went quiet, if it still is (a serializeAttachment at every
    // quiet moment, i.e. after each request at c=1, cost the relay about 30 µs per request);
    // the timer keeps the object from hibernating until then, and each new quiet moment sets
    // it again, so the counts written last are those it hibernates with.
    session.frames.onQuiescent = () => {
      if (session.persistTimer) return;
      session.persistTimer = setTimeout(() => {
        session.persistTimer = undefined;
        if (session.link !== link || this.ended.has(link) || !session.frames.quiescent) return;
        const attachment = this.attachment(link) as ReadyAttachment;
        this.setAttachment(link, { ...attachment, counts: session.frames.snapshot() } satisfies Attachment);
      }, PERSIST_MS);
    };
    // An agent that provokes frames (a Reset for each frame of a stream that does not exist) and
    // never acknowledges them would have the relay keep them all: past the bound its session
    // ends, and what it kept goes with it.
    session.frames.onOverflow = (why) => {
      const current = session.link;
      const name = current ? (this.attachment(current) as ReadyAttachment).name : "";
      console.warn(`tunnel ${name}: closing the agent's connection: it ${why}`);
      if (current) this.close(current, CloseCode.Unacknowledged, `the agent ${why}`);
      this.endSession(session, `The tunnel's agent stopped acknowledging what the relay sent (it ${why}); retry the request.`);
    };
  }

  /** The session is over: its streams fail, its visitors' WebSockets close. */
  private endSession(session: AgentSession, why: string): void {
    cancelTimer(session.resumeTimer);
    session.frames.end();
    this.streams.failSocket(session, 502, "agent-disconnected", why);
    if (this.current === session) {
      this.current = undefined;
      this.sockets.closeAll(why.slice(0, 120));
    }
  }

  /**
   * Counts this tunnel among its token's (TUNNELS_PER_TOKEN), in the token's gate. Names the
   * gate lists whose tunnels no longer have that token's agent (their relay restarted, say)
   * are dropped from the count before the token is refused.
   */
  private async holdForToken(admission: Extract<Admission, { ok: true }>, name: string): Promise<Admission> {
    const gate = this.host.gate(admission.owner);
    const limit = this.settings.tunnelsPerToken;
    let answer = await gate.hold(name, limit);
    if (answer.ok) return admission;
    const stale: string[] = [];
    for (const other of answer.held) {
      const tunnel = this.host.tunnel(other);
      if ((await tunnel.connectedOwner()) !== admission.owner) stale.push(other);
    }
    if (stale.length > 0) {
      await gate.release(...stale);
      answer = await gate.hold(name, limit);
      if (answer.ok) return admission;
    }
    const held = answer.held.filter((n) => !stale.includes(n));
    return {
      ok: false,
      code: "too-many-tunnels",
      message: `the token "${admission.label}" already holds ${held.length} tunnels, the relay's limit (TUNNELS_PER_TOKEN): ${held.join(", ")}`,
    };
  }

  private async releaseForToken(owner: string, name: string): Promise<void> {
    // The same owner holds the tunnel again (a twin connection, a resumed session): keep it counted.
    if (!owner.startsWith("token:") || this.current?.owner === owner || this.shard > 0) return;
    await this.host.gate(owner).release(name);
  }

  /** Which of its tunnel's objects this is (see shards.ts): learnt from its links and visits. */
  private shard = 0;
  /** Shard 0: the tunnel's other shards whose agent is connected (storage SHARDS_KEY). */
  private shardsUp: Set<number> | undefined;

  private learnShard(url: URL): number {
    this.shard = Number(url.searchParams.get("shard") ?? 0);
    return this.shard;
  }

  /** The tunnel's shard 0, which holds its name (for a shard k > 0). */
  private primary(name: string): TunnelPeer {
    return this.host.tunnel(name);
  }

  /** This shard's reports to shard 0, one after the other (see reportShard). */
  private shardReports: Promise<unknown> = Promise.resolve();

  /**
   * Tells shard 0 that this shard's agent came (`up`) or left. In order: a cut and the resume
   * that follows at once must not arrive the other way round, or visitors would skip a shard
   * whose agent is here.
   */
  private reportShard(name: string, shard: number, up: boolean): void {
    this.shardReports = this.shardReports
      .then(() => this.primary(name).shardState(shard, up))
      .catch((error: unknown) =>
        console.warn(`tunnel ${name}: shard ${shard} could not tell shard 0 it is ${up ? "up" : "down"}`, error),
      );
    this.host.waitUntil(this.shardReports);
  }

  private async shardSet(): Promise<Set<number>> {
    this.shardsUp ??= new Set(await this.host.storage.get<number[]>(SHARDS_KEY));
    return this.shardsUp;
  }

  /**
   * Shard 0: the shards of this tunnel visitors may go to now (see ShardMap): 0 while its own
   * agent is here or on its way back, and every other shard whose agent is connected. Said on
   * the answers to visits that ask (SHARDS_HEADER); an RPC still for Workers of the previous
   * release, which asked before each visit, while a deploy replaces them.
   */
  async liveShards(): Promise<number[]> {
    const live = [...(await this.shardSet())].sort((a, b) => a - b);
    if (this.agent() ?? this.current) live.unshift(0);
    return live;
  }

  /** Shard 0: shard `shard`'s agent connected (`up`) or left. */
  async shardState(shard: number, up: boolean): Promise<void> {
    const set = await this.shardSet();
    if (up === set.has(shard)) return;
    if (up) set.add(shard);
    else set.delete(shard);
    await this.host.storage.put(SHARDS_KEY, [...set]);
  }

  /**
   * Shard 0: may the agent of `hello` open shard `shard` of this tunnel, which its connect URL
   * named `name`? Only the agent that holds the name now (same token, or same claim on an open
   * relay), only while it does, and only for this name; the shard gets this tunnel's visitor
   * rules to enforce.
   */
  async admitShard(hello: HelloFrame, shard: number, name: string): Promise<ShardAdmission> {
    const none: HelloFrame["rules"] = { basicAuth: [], allowIp: [], webhooks: [] };
    const session = this.agent() ?? this.current;
    if (!session) {
      return {
        admission: {
          ok: false,
          code: "shard-waiting",
          message: `connection ${shard + 1} waits for the tunnel's first connection to be up`,
        },
        rules: none,
      };
    }
    const admission = await admit({
      hello,
      requested: name,
      tokens: await this.tokenList(),
      record: await this.host.storage.get<NameRecord>(NAME_KEY),
      liveOwner: session.owner,
      now: Date.now(),
      bootedAt: this.bootedAt,
      policy: { nameTtlMs: this.settings.nameTtlMs, graceMs: NAME_GRACE_MS, allowPunycode: this.settings.allowPunycodeNames },
    });
    if (admission.ok && admission.owner !== session.owner) {
      return {
        admission: { ok: false, code: "name-taken", message: `another agent holds the tunnel "${hello.name}"` },
        rules: none,
      };
    }
    return {
      admission,
      rules: (await this.host.storage.get<HelloFrame["rules"]>(RULES_KEY)) ?? none,
      primary: session.id,
    };
  }

  /**
   * Shard 0 began a new session (another owner took the name, or its agent restarted, maybe
   * with other rules or fewer connections): the shards that were up leave the live list now,
   * before the new agent's own shards report, and each is told to drop an agent admitted
   * under an earlier session. Else an old agent still holding a shard's connection (hung, or
   * cut off from shard 0 alone) would go on serving the tunnel's visitors under the old rules.
   */
  private async evictShards(name: string, primary: string): Promise<void> {
    const set = await this.shardSet();
    if (set.size === 0) return;
    const stale = [...set];
    set.clear();
    await this.host.storage.put(SHARDS_KEY, []);
    this.host.waitUntil(
      Promise.all(
        stale.map((shard) =>
          this.host
            .tunnel(shardObjectName(name, shard))
            .evictStale(primary)
            .catch((error: unknown) => console.warn(`tunnel ${name}: shard ${shard} could not be told to drop its agent`, error)),
        ),
      ),
    );
  }

  /**
   * Shard k > 0: shard 0's session is `primary` now. An agent admitted under an earlier one
   * leaves with 1012 (reconnect and be judged again: admitShard admits only the name's holder,
   * under the rules of now); one admitted under this one stays.
   */
  async evictStale(primary: string): Promise<void> {
    const session = this.agent() ?? this.current;
    if (!session) return;
    const link = session.link;
    if (link && (this.attachment(link) as ReadyAttachment).primary === primary) return;
    if (link) this.close(link, 1012, "the tunnel's first connection began a new session");
    this.endSession(session, "The tunnel's agent was replaced by a new one; retry the request.");
  }

  /** The owner (a hash) of the agent connected here now, if any: asked by a token's gate count. */
  async connectedOwner(): Promise<string | undefined> {
    return (this.agent() ?? this.current)?.owner;
  }

  private tokenList(): Promise<Tokens> {
    this.tokens ??= parseTokens(this.settings.tokens, this.settings.token);
    return this.tokens;
  }

  /**
   * The agent link left. A clean stop ends its session; a cut leaves the session waiting
   * RESUME_SECONDS for the agent, its streams paused; either way the name stays its owner's.
   */
  private dropped(socket: Link, code: number, reason: string): void {
    const attachment = socket.deserializeAttachment() as Attachment | null;
    this.probes.get(socket)?.(false);
    this.close(socket, 1000, "closed");
    if (attachment?.phase !== "ready") return;
    const session = this.current;
    // A link that a newer connection replaced: the session is the newer one's now.
    if (!session || session.link !== socket) return;
    session.detach();
    const clean = code === CloseCode.Normal;
    const why = clean ? "stopped" : `disconnected (${code}${reason ? ` ${reason}` : ""})`;
    if (clean) {
      this.endSession(session, `The agent for tunnel "${attachment.name}" ${why}.`);
    } else {
      const resumeMs = this.settings.resumeMs;
      session.resumeTimer = setTimeout(() => {
        if (this.current === session && !session.link) {
          this.endSession(
            session,
            `The agent for tunnel "${attachment.name}" ${why} and did not come back within ${resumeMs / 1000}s.`,
          );
          this.host.waitUntil(this.releaseForToken(attachment.owner, attachment.name));
        }
      }, resumeMs);
    }
    const now = Date.now();
    if (attachment.shard) {
      // Visitors go to the tunnel's other shards from now on; this one's rules go soon after.
      this.reportShard(attachment.name, attachment.shard, false);
      if (!clean) return void this.host.waitUntil(this.host.storage.setAlarm(now + this.settings.resumeMs + 1000));
      this.rules = null;
      this.rulesGeneration++;
      this.host.waitUntil(this.host.storage.delete(RULES_KEY));
      return;
    }
    this.host.waitUntil(
      (async () => {
        if (clean) {
          await this.releaseForToken(attachment.owner, attachment.name);
          // A new agent may have come meanwhile: the tunnel's state is its now.
          if (this.current) return;
          // Its rules leave with it; on an open relay the name is free at once.
          this.rules = null;
          this.rulesGeneration++;
          await this.host.storage.delete(RULES_KEY);
          if (!attachment.owner.startsWith("token:")) return void (await this.host.storage.delete(NAME_KEY));
        }
        const record: NameRecord & { dropped: boolean } = {
          owner: attachment.owner,
          label: attachment.label,
          lastUsed: now,
          connected: false,
          dropped: !clean,
        };
        if (this.current && this.current !== session) return;
        if (!clean && session.link) return; // resumed already
        await this.host.storage.put(NAME_KEY, record);
        // Soon after the resume window, to delete the rules of an agent that did not come back.
        await this.host.storage.setAlarm(clean ? now + this.settings.nameTtlMs : now + this.settings.resumeMs + 1000);
      })(),
    );
  }

  /**
   * The agent's session while a link carries it. After a wake from hibernation the session is
   * found again from the ready link's attachment, with the counts it had when last quiescent
   * (the runtime hibernates an object only when nothing is in flight).
   */
  private agent(): AgentSession | undefined {
    if (this.current) return this.current.link ? this.current : undefined;
    const link = this.agentLinks().find((s) => !this.ended.has(s) && (s.deserializeAttachment() as Attachment).phase === "ready");
    if (!link) return undefined;
    const attachment = link.deserializeAttachment() as ReadyAttachment;
    this.shard = attachment.shard ?? 0;
    const session = new AgentSession(
      attachment.session,
      attachment.owner,
      attachment.label,
      unackedLimit(this.settings.maxStreams),
      attachment.counts,
    );
    this.current = session;
    this.use(session, link, attachment.counts?.sent ?? 0);
    return session;
  }

  /** Agents' WebSockets and HTTPS sessions (visitors' WebSockets carry another tag). */
  private agentLinks(): Link[] {
    return [...this.host.links.byTag(AGENT_TAG), ...this.sessions.values()];
  }

  /**
   * A link's attachment, read once and then kept in memory: every message on a link needs it,
   * and a deserialization each cost the relay about 10 µs of its CPU per small request. A wake
   * from hibernation starts with an empty cache; every change goes through setAttachment.
   */
  private attachment(link: Link): Attachment {
    let attachment = this.attachments.get(link);
    if (!attachment) {
      attachment = link.deserializeAttachment() as Attachment;
      this.attachments.set(link, attachment);
    }
    return attachment;
  }

  private setAttachment(link: Link, attachment: Attachment): void {
    link.serializeAttachment(attachment);
    this.attachments.set(link, attachment);
  }

  private sendFrame(session: AgentSession, frame: Frame): void {
    session.push(frame);
  }

  /** A frame outside any session (Ready, Refused), as a message of its own. */
  private sendAlone(link: Link, frame: Frame): void {
    try {
      link.send(encodeFrame(frame));
    } catch (error) {
      if (!isTeardownNoise(error)) console.error("sending a frame to the agent failed", error);
    }
  }

  private close(socket: Link, code: number, reason: string): void {
    this.ended.add(socket);
    try {
      // Close reasons are limited to 123 bytes (RFC 6455 section 5.5).
      socket.close(code, truncateUtf8(reason, 123));
    } catch (error) {
      if (!isTeardownNoise(error)) console.warn("closing a socket failed", error);
    }
  }
}

/**
 * A visitor's request as the Worker handed it over (see app.ts visit), in one pass over its
 * fields: the INTERNAL ones read, the hop-by-hop ones the runtime may add to this hop
 * (Transfer-Encoding) dropped, the rest as the RequestHead frame carries them.
 */
function visitorHead(fields: Headers): VisitorHead & { upgrade: boolean; contentLength: number | undefined } {
  const json = fields.get(INTERNAL.head);
  if (json !== null) {
    const head = JSON.parse(json) as VisitorHead;
    const length = head.headers.find(([name]) => name === "content-length")?.[1];
    const upgrade = head.upgrade ?? fields.get("upgrade")?.toLowerCase() === "websocket";
    return { ...head, upgrade, contentLength: length === undefined ? undefined : Number(length) };
  }
  return visitorFields(fields, fields.get("upgrade")?.toLowerCase() === "websocket");
}

/** The same, from a head too large for INTERNAL.head: field by field. */
function visitorFields(fields: Headers, upgrade: boolean) {
  let tunnel = "";
  let shard = 0;
  let forwarded = false;
  let asks = false;
  let path = "/";
  let clientIp: string | null = null;
  let relayUrl = "";
  let contentLength: number | undefined;
  const headers: HeaderList = [];
  for (const [name, value] of fields) {
    switch (name) {
      case INTERNAL.tunnel:
        tunnel = value;
        continue;
      case INTERNAL.path:
        path = value;
        continue;
      case INTERNAL.shard:
        // "k!": handed on from another shard (see forward); "0?": the Worker asks (see visit).
        shard = Number.parseInt(value, 10);
        forwarded = value.endsWith("!");
        asks = value.endsWith("?");
        continue;
      case INTERNAL.clientIp:
        clientIp = value;
        continue;
      case INTERNAL.relayUrl:
        relayUrl = value;
        continue;
      case "content-length":
        contentLength = Number(value);
        break;
    }
    if (!HOP_BY_HOP.has(name) && !isInternal(name)) headers.push([name, value]);
  }
  return { tunnel, shard, forwarded, asks, path, upgrade, clientIp, relayUrl, contentLength, headers };
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return text;
  return `${new TextDecoder().decode(bytes.subarray(0, maxBytes - 3)).replace(/\uFFFD$/, "")}...`;
}
