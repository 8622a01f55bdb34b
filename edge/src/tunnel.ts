import { DurableObject } from "cloudflare:workers";
import {
  CloseCode,
  CONNECT_PATH,
  concatBytes,
  decodeFrames,
  type Frame,
  FrameBatch,
  FrameType,
  HEARTBEAT,
  type HelloFrame,
  PROTOCOL_VERSION,
  ProtocolError,
  type RefusalCode,
  SESSION_PATH,
} from "@burrow/protocol";
import type { Env } from "./env.ts";
import { EdgeError, isTeardownNoise } from "./errors.ts";
import { INTERNAL, isInternal, withoutHopByHop } from "./headers.ts";
import { type AgentLink, PollingLink } from "./polling.ts";
import { SocketRelay, type VisitorAttachment } from "./sockets.ts";
import { StreamTable } from "./streams.ts";

/** What each agent socket remembers across hibernation (`serializeAttachment`, max 2 KiB). */
type Attachment =
  | { phase: "hello"; name: string; url: string }
  | { phase: "ready"; name: string; url: string; claim: string }
  | VisitorAttachment;
type HelloAttachment = Extract<Attachment, { phase: "hello" }>;

/** After an agent drops without saying goodbye, its name stays reserved for it this long. */
const NAME_GRACE_MS = 60_000;
/**
 * A visitor who arrives while the agent reconnects (a proxy cut its connection, say) waits
 * this long for it instead of getting an error: agents retry within a second after a drop.
 */
const AGENT_RETURN_WAIT_MS = 10_000;
const DEFAULT_RESPONSE_TIMEOUT_S = 600;

/**
 * One tunnel: holds its agent's WebSocket (Hibernation API, so an idle tunnel costs nothing)
 * and turns each visitor request into a stream of frames on it.
 */
export class TunnelObject extends DurableObject<Env> {
  private readonly sockets = new SocketRelay(this.ctx, (socket, frame) => this.sendFrame(socket, frame));
  private readonly streams = new StreamTable(
    (socket, frame) => this.sendFrame(socket, frame),
    (id, protocol) => this.sockets.accept(id, protocol),
  );
  private lastStreamId = Math.floor(Math.random() * 0x7fff_ffff);
  /** Frames sent to an agent in one turn leave as one message (a microtask later). */
  private readonly batches = new WeakMap<AgentLink, FrameBatch>();
  /** Visitors waiting for a dropped agent to come back (see agentBack). */
  private readonly returning = new Set<(agent: AgentLink) => void>();
  /**
   * The ready agent link, once found: agent() is asked on every visitor request and message,
   * and finding it means deserializing every socket's attachment. Set by hello(), unset when
   * that link drops; empty after a wake from hibernation until agent() looks again.
   */
  private ready: AgentLink | undefined;
  /** Links the relay closed or saw close, whose attachments may still say "ready". */
  private readonly ended = new WeakSet<AgentLink>();
  /** Agents on the HTTPS transport, by session id (in memory: see PollingLink). */
  private readonly sessions = new Map<string, PollingLink>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Answered by the runtime itself, without waking this object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT.ping, HEARTBEAT.pong));
  }

  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    try {
      if (url.pathname === CONNECT_PATH) return this.accept(request, url);
      if (url.pathname.startsWith(SESSION_PATH)) return await this.session(request, url);
      return await this.visit(request);
    } catch (error) {
      if (error instanceof EdgeError) return error.toResponse();
      console.error(`tunnel ${request.headers.get(INTERNAL.tunnel)}: fetch failed`, error);
      return new EdgeError(500, "relay-error", "The relay failed to handle this request; it has been logged.").toResponse();
    }
  }

  /** The Worker validated the name and the upgrade; the hello decides whether the agent stays. */
  private accept(request: Request, url: URL): Response {
    const name = url.searchParams.get("name") ?? "";
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ phase: "hello", name, url: request.headers.get(INTERNAL.publicUrl) ?? "" } satisfies Attachment);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** The HTTPS transport: open a session, carry frames both ways, close it. */
  private async session(request: Request, url: URL): Promise<Response> {
    if (url.pathname === SESSION_PATH && request.method === "POST") {
      const link = new PollingLink((ended, code, reason) => {
        this.sessions.delete(ended.id);
        this.closed(ended, code, reason);
      });
      link.serializeAttachment({
        phase: "hello",
        name: url.searchParams.get("name") ?? "",
        url: request.headers.get(INTERNAL.publicUrl) ?? "",
      } satisfies Attachment);
      this.sessions.set(link.id, link);
      return Response.json({ session: link.id }, { status: 201, headers: { "Cache-Control": "no-store" } });
    }
    const link = this.sessions.get(decodeURIComponent(url.pathname.slice(SESSION_PATH.length + 1)));
    if (!link) {
      throw new EdgeError(404, "not-found", "No such session: it ended, or the relay restarted. Open a new one.");
    }
    const number = (name: string) => {
      const value = Number(url.searchParams.get(name));
      if (!Number.isSafeInteger(value) || value < 0) throw new EdgeError(400, "bad-request", `?${name}= must be a count`);
      return value;
    };
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
    const tunnel = request.headers.get(INTERNAL.tunnel) ?? "";
    const path = request.headers.get(INTERNAL.path) ?? "/";
    const agent = this.agent() ?? (await this.agentBack());
    if (!agent) {
      throw new EdgeError(
        502,
        "agent-offline",
        `No agent is connected for tunnel "${tunnel}". Start one next to your server: npx -p burrow-agent agent --port 8000 --name ${tunnel} --relay <this relay's URL>`,
      );
    }
    const id = this.nextStreamId();
    const upgrade = request.headers.get("upgrade")?.toLowerCase() === "websocket";
    const response = this.streams.open(id, agent, request.method, upgrade);
    // Before the head, only the signal tells that the visitor left (compatibility flag
    // enable_request_signal); after it, the response body's writer does.
    request.signal.addEventListener("abort", () => this.streams.abandon(id, "the visitor went away"));
    const headers = withoutHopByHop(request.headers).filter(([name]) => !isInternal(name));
    // The agent opens its own WebSocket to the origin when it sees this.
    if (upgrade) headers.push(["upgrade", "websocket"]);
    this.sendFrame(agent, { type: FrameType.RequestHead, stream: id, method: request.method, path, headers });
    const timeoutMs = 1000 * (Number(this.env.RESPONSE_TIMEOUT_SECONDS) || DEFAULT_RESPONSE_TIMEOUT_S);
    this.ctx.waitUntil(this.streams.forwardBody(id, request.body).then(() => this.streams.awaitHead(id, timeoutMs, tunnel)));
    return response;
  }

  /**
   * The agent, once it is back, if it dropped without saying goodbye moments ago (its name is
   * still reserved for it); undefined if it does not return within AGENT_RETURN_WAIT_MS.
   */
  private async agentBack(): Promise<AgentLink | undefined> {
    const lease = await this.ctx.storage.get<{ claim: string; until: number }>("claim");
    if (!lease || lease.until < Date.now() + NAME_GRACE_MS - AGENT_RETURN_WAIT_MS) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.returning.delete(waiter);
        resolve(undefined);
      }, AGENT_RETURN_WAIT_MS);
      const waiter = (agent: AgentLink) => {
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

  override async webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    // Text is only ever a heartbeat, and those are answered by the auto-response.
    const attachment = socket.deserializeAttachment() as Attachment;
    if (attachment.phase === "visitor") {
      const agent = this.agent();
      if (agent) this.sockets.fromVisitor(agent, socket, attachment.stream, message);
      else this.sockets.closeAll("the tunnel's agent is not connected");
      return;
    }
    if (typeof message === "string") return;
    await this.fromAgent(socket, new Uint8Array(message));
  }

  /** One message of frames from an agent, on either transport. */
  private async fromAgent(link: AgentLink, message: Uint8Array): Promise<void> {
    const attachment = link.deserializeAttachment() as Exclude<Attachment, VisitorAttachment>;
    try {
      let phase: Attachment["phase"] = attachment.phase;
      for (const frame of decodeFrames(message)) {
        if (phase === "ready") {
          this.receive(link, frame);
        } else if (phase === "hello") {
          await this.hello(link, frame, link.deserializeAttachment() as HelloAttachment);
          phase = (link.deserializeAttachment() as Attachment).phase;
        }
      }
    } catch (error) {
      if (error instanceof ProtocolError) {
        console.warn(`tunnel ${attachment.name}: closing the agent's connection: ${error.message}`);
        this.close(link, CloseCode.ProtocolError, `protocol error: ${error.message}`);
        this.streams.failSocket(
          link,
          502,
          "agent-disconnected",
          `The agent for tunnel "${attachment.name}" broke the protocol: ${error.message}`,
        );
      } else if (!isTeardownNoise(error)) {
        console.error(`tunnel ${attachment.name}: a message from the agent failed`, error);
      }
    }
  }

  override async webSocketClose(socket: WebSocket, code: number, reason: string): Promise<void> {
    this.closed(socket, code, reason);
  }

  override async webSocketError(socket: WebSocket, error: unknown): Promise<void> {
    if (!isTeardownNoise(error)) console.warn("socket error", error);
    this.closed(socket, 1006, "socket error");
  }

  private closed(socket: AgentLink, code: number, reason: string): void {
    const attachment = socket.deserializeAttachment() as Attachment | null;
    if (attachment?.phase !== "visitor") {
      this.dropped(socket, code, reason);
      return;
    }
    this.sockets.closedByVisitor(this.agent(), attachment.stream, code, reason);
    this.close(socket, code === 1005 || code === 1006 ? 1000 : code, reason);
  }

  private receive(socket: AgentLink, frame: Frame): void {
    let known: boolean;
    switch (frame.type) {
      case FrameType.ResponseHead:
        known = this.streams.head(frame);
        break;
      case FrameType.Data:
        known = this.streams.data(frame.stream, frame.bytes);
        break;
      case FrameType.End:
        known = this.streams.end(frame.stream);
        break;
      case FrameType.Reset:
        this.streams.reset(frame.stream, frame.code, frame.message);
        return; // a reset of a stream already gone needs no answer
      case FrameType.Credit:
        if (!this.streams.granted(frame.stream, frame.bytes)) this.sockets.granted(socket, frame.stream, frame.bytes);
        return; // credit may trail a stream that just ended
      case FrameType.WsMessage:
        known = this.sockets.fromAgent(socket, frame);
        break;
      case FrameType.WsClose:
        this.sockets.closedByOrigin(frame);
        return; // the visitor may have closed first
      default:
        throw new ProtocolError("malformed-frame", `the relay does not accept a frame of type ${frame.type} from an agent`);
    }
    // Frames for a stream the relay already finished (the visitor left) are expected while the
    // agent catches up with the Reset it was sent; anything else is the agent's bug.
    if (!known) {
      this.sendFrame(socket, {
        type: FrameType.Reset,
        stream: frame.stream,
        code: "cancelled",
        message: "this stream is no longer open",
      });
    }
  }

  private async hello(socket: AgentLink, frame: Frame, attachment: HelloAttachment): Promise<void> {
    const refusal = await this.judge(frame, attachment);
    if (refusal) {
      this.sendFrame(socket, { type: FrameType.Refused, code: refusal[0], message: refusal[1] });
      this.batches.get(socket)?.flush();
      this.close(socket, CloseCode.Refused, refusal[0]);
      return;
    }
    const hello = frame as HelloFrame;
    const claim = await sha256(hello.claim);
    for (const other of this.links()) {
      if (other === socket || (other.deserializeAttachment() as Attachment).phase !== "ready") continue;
      // judge() refused other claims, so a ready socket left is this agent's previous connection.
      this.close(other, CloseCode.Replaced, "replaced by a newer connection from the same agent");
      this.streams.failSocket(
        other,
        502,
        "agent-disconnected",
        `The agent for tunnel "${hello.name}" reconnected; retry the request.`,
      );
      this.sockets.closeAll("the tunnel's agent reconnected");
    }
    socket.serializeAttachment({ phase: "ready", name: hello.name, url: attachment.url, claim } satisfies Attachment);
    // The link may have dropped while this hello awaited.
    if (!this.ended.has(socket)) this.ready = socket;
    await this.ctx.storage.put("claim", { claim, until: 0 });
    this.sendFrame(socket, { type: FrameType.Ready, name: hello.name, url: attachment.url });
    for (const waiter of this.returning) waiter(socket);
    this.returning.clear();
  }

  /** Returns why the hello is refused, or undefined to accept it. */
  private async judge(frame: Frame, attachment: HelloAttachment): Promise<[RefusalCode, string] | undefined> {
    if (frame.type !== FrameType.Hello) return ["bad-hello", "the first frame on a connection must be a Hello"];
    if (frame.version < PROTOCOL_VERSION) {
      return [
        "version-mismatch",
        `this relay speaks protocol ${PROTOCOL_VERSION} and the agent speaks ${frame.version}: upgrade the agent`,
      ];
    }
    if (frame.version > PROTOCOL_VERSION) {
      return [
        "version-mismatch",
        `this relay speaks protocol ${PROTOCOL_VERSION} and the agent speaks ${frame.version}: redeploy the relay with a newer Burrow (npm run deploy), or use an older agent`,
      ];
    }
    const expected = this.env.BURROW_TOKEN;
    if (expected && !(await sameSecret(frame.token, expected))) {
      return [
        "unauthorized",
        frame.token
          ? "the token is not the one this relay was given: check --token or BURROW_TOKEN"
          : "this relay requires a token: pass --token or set BURROW_TOKEN",
      ];
    }
    if (frame.name !== attachment.name) {
      return ["bad-hello", `the hello asks for tunnel "${frame.name}" but the connection was opened for "${attachment.name}"`];
    }
    const claim = await sha256(frame.claim);
    const held = this.links().some((other) => {
      const a = other.deserializeAttachment() as Attachment;
      return a.phase === "ready" && a.claim !== claim;
    });
    const lease = await this.ctx.storage.get<{ claim: string; until: number }>("claim");
    const reserved = lease && lease.claim !== claim && lease.until > Date.now();
    if (held || reserved) {
      const wait =
        reserved && !held ? ` (it is kept for its agent for ${Math.ceil((lease.until - Date.now()) / 1000)}s more)` : "";
      return ["name-taken", `the tunnel name "${frame.name}" is in use by another agent${wait}: choose another --name`];
    }
    return undefined;
  }

  /** The agent socket left: fail its streams, and keep its name for it unless it said goodbye. */
  private dropped(socket: AgentLink, code: number, reason: string): void {
    const attachment = socket.deserializeAttachment() as Attachment | null;
    this.close(socket, 1000, "closed");
    if (attachment?.phase !== "ready") return;
    const why = code === CloseCode.Normal ? "stopped" : `disconnected (${code}${reason ? ` ${reason}` : ""})`;
    this.streams.failSocket(socket, 502, "agent-disconnected", `The agent for tunnel "${attachment.name}" ${why}.`);
    // A link that a newer connection of the same agent replaced: the visitors' WebSockets and
    // the name are the new one's now.
    if (this.agent()) return;
    this.sockets.closeAll(`the tunnel's agent ${why}`);
    const until = code === CloseCode.Normal ? 0 : Date.now() + NAME_GRACE_MS;
    this.ctx.waitUntil(this.ctx.storage.put("claim", { claim: attachment.claim, until }));
  }

  /** The connected agent, if any. At most one link is ready at a time. */
  private agent(): AgentLink | undefined {
    this.ready ??= this.links().find((s) => !this.ended.has(s) && (s.deserializeAttachment() as Attachment).phase === "ready");
    return this.ready;
  }

  /** Every connection: agents' WebSockets and HTTPS sessions, and visitors' WebSockets. */
  private links(): AgentLink[] {
    return [...this.ctx.getWebSockets(), ...this.sessions.values()];
  }

  private sendFrame(socket: AgentLink, frame: Frame): void {
    let batch = this.batches.get(socket);
    if (!batch) {
      batch = new FrameBatch(
        (parts, size) => {
          try {
            socket.send(parts.length === 1 ? parts[0]! : concatBytes(parts, size));
          } catch (error) {
            if (!isTeardownNoise(error)) console.error("sending frames to the agent failed", error);
          }
        },
        (flush) => queueMicrotask(flush),
      );
      this.batches.set(socket, batch);
    }
    batch.push(frame);
  }

  private close(socket: AgentLink, code: number, reason: string): void {
    this.ended.add(socket);
    if (this.ready === socket) this.ready = undefined;
    try {
      // Close reasons are limited to 123 bytes (RFC 6455 section 5.5).
      socket.close(code, truncateUtf8(reason, 123));
    } catch (error) {
      if (!isTeardownNoise(error)) console.warn("closing a socket failed", error);
    }
  }
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** Constant-time comparison of two secrets (hashed first, so lengths do not leak). */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([given, expected].map((s) => crypto.subtle.digest("SHA-256", new TextEncoder().encode(s))));
  return crypto.subtle.timingSafeEqual(a as ArrayBuffer, b as ArrayBuffer);
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return text;
  return `${new TextDecoder().decode(bytes.subarray(0, maxBytes - 3)).replace(/\uFFFD$/, "")}...`;
}
