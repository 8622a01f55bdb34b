import {
  CloseCode,
  CONNECT_PATH,
  closeReason,
  encodeFrame,
  type Frame,
  type HelloFrame,
  SESSION_PATH,
  unackedLimit,
} from "@burrow/protocol";
import { type NameRecord, parseTokens, type Tokens } from "./admission.ts";
import { SignedBodies } from "./bodies.ts";
import { EdgeError, isTeardownNoise } from "./errors.ts";
import { INTERNAL, VISIT_URL } from "./headers.ts";
import type { Link, PublicSocket, ShardAdmission, TunnelHost, TunnelPeer } from "./host.ts";
import type { RateMeter } from "./limits.ts";
import type { PollingLink } from "./polling.ts";
import type { RuleSet } from "./rules.ts";
import { AgentSession } from "./session.ts";
import type { RelaySettings } from "./settings.ts";
import { Tally } from "./shares.ts";
import { SocketRelay } from "./sockets.ts";
import { StreamTable } from "./streams.ts";
import { type Connector, TcpRoutes } from "./tcp.ts";
import {
  awaitConnect,
  CONNECTOR_ROLE,
  CONNECTOR_TAG,
  connectorDropped,
  connectorInSlot,
  connectorLinks,
  fromConnector,
  wakeConnectors,
} from "./tunnel-connect.ts";
import { fromAgent } from "./tunnel-frames.ts";
import { use } from "./tunnel-hello.ts";
import { httpsRequest } from "./tunnel-https.ts";
import { dropped, nameAlarm } from "./tunnel-leases.ts";
import { acceptTcp } from "./tunnel-ports.ts";
import { admitShard, connectedOwner, evictStale, learnShard, liveShards, shardState } from "./tunnel-shards.ts";
import { AGENT_TAG, type Attachment, NAME_KEY, type ReadyAttachment } from "./tunnel-state.ts";
import { visit } from "./tunnel-visit.ts";

/**
 * One tunnel (or one shard of it: see shards.ts): holds its agent's connection and turns each
 * visitor request into a stream of frames on it. Who may connect and who owns the name is
 * decided in admission.ts, who may visit in rules.ts, with the limits of settings.ts; this
 * class puts them together on what its host gives it (see host.ts): a Durable Object's
 * hibernating sockets, storage and alarms on Cloudflare, memory and a data directory self-hosted.
 *
 * Its fields are the tunnel's state, shared by the files that hold what it does: tunnel-hello.ts
 * (admission and the agent's session), tunnel-frames.ts (frames from the agent), tunnel-visit.ts
 * (visitors), tunnel-leases.ts (the name's lease and alarm), tunnel-shards.ts and
 * tunnel-https.ts (the HTTPS transport). Hosts call its methods only.
 */
export class TunnelCore implements TunnelPeer {
  readonly host: TunnelHost;
  readonly settings: RelaySettings;
  readonly sockets: SocketRelay;
  readonly streams: StreamTable;
  /** A TCP tunnel's streams, joined to visitors' connects or (self-hosted) public ports. */
  readonly tcp: TcpRoutes;
  /** Visitors' `agent connect` sessions, by id (see tunnel-connect.ts). */
  readonly connectors = new Map<string, Connector>();
  readonly bootedAt = Date.now();
  /** How the agent's session batches its frames (see TunnelHost.defer). */
  readonly defer: ((work: () => void) => void) | undefined;
  tokens: Promise<Tokens> | undefined;
  lastStreamId = Math.floor(Math.random() * 0x7fff_ffff);
  /** How fast each agent link sends (frames, bytes), against the limits. */
  readonly meters = new WeakMap<Link, { frames: RateMeter; bytes: RateMeter }>();
  /** Visitors waiting for a dropped agent to come back (see agentBack). */
  readonly returning = new Set<(agent: AgentSession) => void>();
  /**
   * The agent's session: what its streams belong to, carried by one link at a time and waiting
   * for it after a cut. Set by hello(); after a wake from hibernation, found again from the
   * ready link's attachment by agent().
   */
  current: AgentSession | undefined;
  /** Attachments as last set or read (see attachment). */
  readonly attachments = new WeakMap<Link, Attachment>();
  /** Links the relay closed or saw close, whose attachments may still say "ready". */
  readonly ended = new WeakSet<Link>();
  /** Agents on the HTTPS transport, by the id of their PollingLink (in memory only). */
  readonly pollingLinks = new Map<string, PollingLink>();
  /** The visitor rules of the connected agent; undefined until read from storage. */
  rules: RuleSet | null | undefined;
  /** Counts changes of `rules`, so a request checked under older ones is checked again. */
  rulesGeneration = 0;
  /**
   * Visitor requests that passed the rules and wait for the agent to come back: they count
   * against MAX_STREAMS_PER_TUNNEL and their visitor's share, as streams.
   */
  readonly admitted = new Tally();
  /** Bodies read before their check, in a pool of their own (see bodies.ts). */
  readonly signedBodies: SignedBodies;
  /** Links asked whether they are alive (see answers), and what to call when they say so. */
  readonly probes = new Map<Link, (alive: boolean) => void>();
  /** Hellos are judged one at a time: two racing for a name must not both win it. */
  hellos: Promise<unknown> = Promise.resolve();

  constructor(host: TunnelHost) {
    this.host = host;
    this.settings = host.settings;
    this.defer = host.defer?.bind(host);
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
    this.tcp = new TcpRoutes(
      () => this.agent() ?? this.current,
      () => this.nextStreamId(),
      (slot) => connectorInSlot(this, slot),
    );
  }

  /** A stream id for the agent's session, unique among the open ones. */
  nextStreamId(): number {
    // The upper half of the ids is the connectors' (see tcp.ts, CONNECTOR_IDS).
    const id = this.lastStreamId >= 0x7fff_fffe ? 1 : this.lastStreamId + 1;
    this.lastStreamId = id;
    return id;
  }

  /**
   * Called once by the host before anything else (on Cloudflare inside blockConcurrencyWhile).
   * A restart (a deploy, an eviction, a self-hosted relay's restart) says nothing to the links
   * it drops: a record still marked connected with no agent link alive is from before, and
   * counts as a drop now (the name waits for its agent as after a cut, and lapses after
   * NAME_TTL_DAYS from here).
   */
  async start(): Promise<void> {
    // A wake from hibernation: the agent's session and its visitors' connects are found again
    // from their links' attachments before any event of theirs, a close among them (a cut
    // session then waits for its peer, as when it was in memory).
    this.agent();
    wakeConnectors(this);
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
    // A host in one process hands over the front's (url, init). A visit reads it as it is: a
    // Request (undici's, with its Headers and AbortSignal) cost the self-hosted relay on Node
    // about 15 µs of CPU per small request (bench/profile.ts). The front's body is a stream or null.
    if (input === VISIT_URL) {
      const headers = new Headers(init?.headers);
      const body = (init?.body ?? null) as ReadableStream<Uint8Array> | null;
      return this.fetched(headers, () =>
        visit(this, { method: init?.method ?? "GET", headers, body, signal: init?.signal ?? undefined }),
      );
    }
    // Node's Request (undici) takes a streamed body only with `duplex: "half"`, which workerd ignores.
    const request =
      typeof input === "string" ? new Request(input, init?.body ? ({ ...init, duplex: "half" } as RequestInit) : init) : input;
    return this.fetched(request.headers, () => this.route(request));
  }

  private async route(request: Request): Promise<Response> {
    if (request.url === VISIT_URL) return await visit(this, request);
    const url = new URL(request.url);
    if (url.pathname === CONNECT_PATH) return this.accept(request, url);
    if (url.pathname === SESSION_PATH) return await httpsRequest(this, request, url);
    return await visit(this, request);
  }

  /** A request's answer, an EdgeError as its page, any other failure logged as a 500. */
  private async fetched(headers: Headers, answer: () => Promise<Response>): Promise<Response> {
    try {
      return await answer();
    } catch (error) {
      if (error instanceof EdgeError) return error.toResponse();
      console.error(`tunnel ${headers.get(INTERNAL.tunnel)}: fetch failed`, error);
      return new EdgeError(500, "relay-error", "The relay failed to handle this request; it has been logged.").toResponse();
    }
  }

  /** The front validated the name and the upgrade; the hello decides whether the agent stays. */
  accept(request: Request, url: URL): Response {
    if (url.searchParams.get("role") === CONNECTOR_ROLE) {
      const { link, response } = this.host.links.upgrade([CONNECTOR_TAG]);
      awaitConnect(this, link, request, url, request.headers.get(INTERNAL.clientIp) ?? "");
      return response;
    }
    const { link, response } = this.host.links.upgrade([AGENT_TAG]);
    this.awaitHello(link, request, url);
    return response;
  }

  /** A new agent link, on either transport: it has HELLO_TIMEOUT_SECONDS to say hello. */
  awaitHello(link: Link, request: Request, url: URL): void {
    this.setAttachment(link, {
      phase: "hello",
      shard: learnShard(this, url),
      name: url.searchParams.get("name") ?? "",
      url: request.headers.get(INTERNAL.publicUrl) ?? "",
    } satisfies Attachment);
    this.helloDeadline(link);
  }

  /**
   * A connection that never says hello is closed: it would hold a socket (and its memory in
   * the runtime) for nothing. The timer keeps this object awake that long, no longer.
   */
  helloDeadline(link: Link, phase: "hello" | "connect" = "hello"): void {
    setTimeout(() => {
      if (this.ended.has(link) || (link.deserializeAttachment() as Attachment | null)?.phase !== phase) return;
      this.close(link, CloseCode.HelloTimeout, `no hello within ${this.settings.helloTimeoutMs / 1000}s`);
    }, this.settings.helloTimeoutMs);
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
    if (attachment.phase === "connect" || attachment.phase === "connector") {
      if (typeof message !== "string") await fromConnector(this, socket, new Uint8Array(message));
      return;
    }
    this.probes.get(socket)?.(true);
    if (typeof message === "string") return;
    await fromAgent(this, socket, new Uint8Array(message));
  }

  /**
   * The host is going away (a self-hosted relay's graceful stop): every agent, on either
   * transport, is told `code` and `reason` (1012: reconnect, as after a Cloudflare deploy). An
   * HTTPS-transport agent hears it in the answer to its waiting poll.
   */
  closeAgents(code: number, reason: string): void {
    // Visitors' connects too: they come back as the agent does, and resume.
    for (const link of [...this.agentLinks(), ...connectorLinks(this)]) this.close(link, code, reason);
  }

  /** Agent (and connect) links not yet gone, on either transport: a host's graceful stop waits for none. */
  agentLinkCount(): number {
    return this.agentLinks().length + connectorLinks(this).length;
  }

  /**
   * A connection to the tunnel's public TCP port (self-hosted with --tcp-ports), handed over
   * paused, from `from` (its peer's address): a stream to the agent, or closed (see acceptTcp).
   */
  acceptTcp(socket: PublicSocket, from: string): Promise<void> {
    return acceptTcp(this, socket, from);
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
  alarm(): Promise<void> {
    return nameAlarm(this);
  }

  linkClosed(socket: Link, code: number, reason: string): void {
    const attachment = socket.deserializeAttachment() as Attachment | null;
    if (attachment?.phase === "connect" || attachment?.phase === "connector") {
      connectorDropped(this, socket, code);
      return;
    }
    if (attachment?.phase !== "visitor") {
      dropped(this, socket, code, reason);
      return;
    }
    this.sockets.closedByVisitor(this.agent() ?? this.current, attachment.stream, code, reason);
    this.close(socket, code === 1005 || code === 1006 ? 1000 : code, reason);
  }

  /** Which of its tunnel's objects this is (see shards.ts): learnt from its links and visits. */
  shard = 0;
  /** Shard 0: the tunnel's other shards whose agent is connected (storage SHARDS_KEY). */
  shardsUp: Set<number> | undefined;

  /** This shard's reports to shard 0, one after the other (see reportShard). */
  shardReports: Promise<unknown> = Promise.resolve();

  /**
   * Shard 0: the shards of this tunnel visitors may go to now (see ShardMap): 0 while its own
   * agent is here or on its way back, and every other shard whose agent is connected. Said on
   * the answers to visits that ask (SHARDS_HEADER); an RPC still for Workers of the previous
   * release, which asked before each visit, while a deploy replaces them.
   */
  liveShards(): Promise<number[]> {
    return liveShards(this);
  }

  /** Shard 0: shard `shard`'s agent connected (`up`) or left. */
  shardState(shard: number, up: boolean): Promise<void> {
    return shardState(this, shard, up);
  }

  /**
   * Shard 0: may the agent of `hello` open shard `shard` of this tunnel, which its connect URL
   * named `name`? Only the agent that holds the name now (same token, or same claim on an open
   * relay), only while it does, and only for this name; the shard gets this tunnel's visitor
   * rules to enforce.
   */
  admitShard(hello: HelloFrame, shard: number, name: string): Promise<ShardAdmission> {
    return admitShard(this, hello, shard, name);
  }

  /**
   * Shard k > 0: shard 0's session is `primary` now. An agent admitted under an earlier one
   * leaves with 1012 (reconnect and be judged again: admitShard admits only the name's holder,
   * under the rules of now); one admitted under this one stays.
   */
  evictStale(primary: string): Promise<void> {
    return evictStale(this, primary);
  }

  /** The owner (a hash) of the agent connected here now, if any: asked by a token's gate count. */
  connectedOwner(): Promise<string | undefined> {
    return connectedOwner(this);
  }

  tokenList(): Promise<Tokens> {
    this.tokens ??= parseTokens(this.settings.tokens, this.settings.token);
    return this.tokens;
  }

  /**
   * The agent's session while a link carries it. After a wake from hibernation the session is
   * found again from the ready link's attachment, with the counts it had when last quiescent
   * (the runtime hibernates an object only when nothing is in flight).
   */
  agent(): AgentSession | undefined {
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
      this.defer,
    );
    session.tcp = attachment.tcp ?? false;
    this.current = session;
    use(this, session, link, attachment.counts?.sent ?? 0);
    return session;
  }

  /** Agents' WebSockets and HTTPS sessions (visitors' WebSockets carry another tag). */
  agentLinks(): Link[] {
    const polling = [...this.pollingLinks.values()].filter((link) => !link.connector);
    return [...this.host.links.byTag(AGENT_TAG), ...polling];
  }

  /**
   * A link's attachment, read once and then kept in memory: every message on a link needs it,
   * and a deserialization each cost the relay about 10 µs of its CPU per small request. A wake
   * from hibernation starts with an empty cache; every change goes through setAttachment.
   */
  attachment(link: Link): Attachment {
    let attachment = this.attachments.get(link);
    if (!attachment) {
      attachment = link.deserializeAttachment() as Attachment;
      this.attachments.set(link, attachment);
    }
    return attachment;
  }

  setAttachment(link: Link, attachment: Attachment): void {
    link.serializeAttachment(attachment);
    this.attachments.set(link, attachment);
  }

  sendFrame(session: AgentSession, frame: Frame): void {
    session.push(frame);
  }

  /** A frame outside any session (Ready, Refused), as a message of its own. */
  sendAlone(link: Link, frame: Frame): void {
    try {
      link.send(encodeFrame(frame));
    } catch (error) {
      if (!isTeardownNoise(error)) console.error("sending a frame to the agent failed", error);
    }
  }

  close(socket: Link, code: number, reason: string): void {
    this.ended.add(socket);
    try {
      socket.close(code, closeReason(reason));
    } catch (error) {
      if (!isTeardownNoise(error)) console.warn("closing a socket failed", error);
    }
  }
}
