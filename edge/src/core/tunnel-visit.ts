import { FrameType, type HeaderList, type HelloFrame, HOP_BY_HOP } from "@burrow/protocol";
import type { NameRecord } from "./admission.ts";
import { visitorKey } from "./cidr.ts";
import { EdgeError } from "./errors.ts";
import { INTERNAL, isInternal, SHARDS_HEADER, VISIT_URL, type VisitHead, withHeaders } from "./headers.ts";
import { RuleSet } from "./rules.ts";
import type { AgentSession } from "./session.ts";
import { pickShard, shardObjectName } from "./shards.ts";
import { checkShare } from "./shares.ts";
import type { TunnelCore } from "./tunnel.ts";
import { liveShards, shardSet } from "./tunnel-shards.ts";
import { AGENT_RETURN_WAIT_MS, NAME_KEY, RULES_KEY } from "./tunnel-state.ts";

/**
 * What a visit reads of its request: on Cloudflare the Durable Object's Request; in one process
 * the front's hop as it is (see TunnelCore.fetch), with no Request made for it.
 */
export interface VisitRequest {
  readonly method: string;
  readonly headers: Headers;
  readonly body: ReadableStream<Uint8Array> | null;
  readonly signal: AbortSignal | undefined;
}

export async function visit(t: TunnelCore, request: VisitRequest): Promise<Response> {
  const visited = visitorHead(request.headers);
  if (!visited.asks || visited.shard !== 0) return serve(t, request, visited);
  // The Worker asks which shards are live (see ShardMap): said on the answer, whatever it is.
  let response: Response;
  try {
    response = await serve(t, request, visited);
  } catch (error) {
    if (!(error instanceof EdgeError)) throw error;
    response = error.toResponse();
  }
  const live = (await liveShards(t)).join(",");
  return withHeaders(t.host, response, (headers) => headers.set(SHARDS_HEADER, live));
}

export async function serve(t: TunnelCore, request: VisitRequest, visited: ReturnType<typeof visitorHead>): Promise<Response> {
  const { tunnel, path, upgrade, clientIp, relayUrl, contentLength } = visited;
  t.shard = visited.shard;
  // A shard whose agent's connection is not here (it left, or is on its way back, since the
  // Worker last asked) hands new visitors on, unread, once: from a shard to shard 0, from
  // shard 0 to a shard whose agent is here. Its streams in flight wait for their session.
  if (!visited.forwarded && !t.agent()) {
    if (visited.shard > 0) return forwardToShard(t, request, visited, 0);
    const others = visited.shard === 0 ? await shardSet(t) : undefined;
    if (others?.size) return forwardToShard(t, request, visited, pickShard([...others]));
  }
  if ((t.agent() ?? t.current)?.tcp) {
    throw new EdgeError(
      421,
      "tcp-tunnel",
      `Tunnel "${tunnel}" carries TCP (ssh, a database), not web pages: reach it with \`agent connect ${tunnel} --listen 127.0.0.1:PORT\` and the key its owner gave you.`,
    );
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
    for (let checkedUnder = -1; checkedUnder !== t.rulesGeneration; ) {
      checkedUnder = t.rulesGeneration;
      const rules = await visitorRules(t);
      if (rules) {
        const checked = await rules.check({ tunnel, headers, clientIp, from, body, contentLength }, t.signedBodies);
        if (checked.body instanceof Uint8Array && !(body instanceof Uint8Array)) held = checked.body.byteLength;
        headers = checked.headers;
        body = checked.body;
      }
      if (!admitted) {
        takeStream(t, from);
        t.admitted.add(from);
        admitted = true;
      }
      agent = t.agent() ?? (await agentBack(t));
    }
  } catch (error) {
    // Refused after its body was read (no stream free, or the rules changed): not held now.
    t.signedBodies.give(held);
    throw error;
  } finally {
    if (admitted) t.admitted.remove(from);
  }
  if (!agent) {
    t.signedBodies.give(held);
    throw new EdgeError(
      502,
      "agent-offline",
      `No agent is connected for tunnel "${tunnel}". Start one next to your server: npx -p burrow-agent agent --port 8000 --name ${tunnel} --relay ${relayUrl || "<this relay's URL>"}`,
    );
  }
  const id = nextStreamId(t);
  // Cookies may name the tunnel's own host at most (see narrowCookie); the path form's
  // Worker then drops Domain altogether (see scopeCookie).
  const base = t.settings.baseDomain;
  const response = t.streams.open(id, agent, request.method, upgrade, base ? `${tunnel}.${base}` : "", from);
  // Before the head, only the signal tells that the visitor left (compatibility flag
  // enable_request_signal; see awaitHead); after it, the response body's writer does.
  // The agent opens its own WebSocket to the origin when it sees t.
  if (upgrade) headers.push(["upgrade", "websocket"]);
  t.sendFrame(agent, { type: FrameType.RequestHead, stream: id, method: request.method, path, headers });
  const timeoutMs = t.settings.responseTimeoutMs;
  if (body === null) {
    // Most requests: nothing to pump, so End goes with the head.
    t.sendFrame(agent, { type: FrameType.End, stream: id });
    t.streams.awaitHead(id, timeoutMs, tunnel, request.signal);
    return response;
  }
  t.host.waitUntil(
    t.streams.forwardBody(id, body).then(() => {
      t.signedBodies.give(held);
      t.streams.awaitHead(id, timeoutMs, tunnel, request.signal);
    }),
  );
  return response;
}

/**
 * Takes a stream for a visitor, within the tunnel's streams and the visitor's share of them.
 * @throws {EdgeError} 503 too-many-streams or too-many-from-address, with Retry-After.
 */
export function takeStream(t: TunnelCore, from: string | undefined): void {
  const sockets = t.sockets.count;
  const open = t.streams.size + sockets + t.admitted.total + t.tcp.size;
  if (open >= t.settings.maxStreams) {
    throw new EdgeError(
      503,
      "too-many-streams",
      `This tunnel has ${open} requests and WebSockets open, its limit (MAX_STREAMS_PER_TUNNEL); retry in a moment.`,
      { "Retry-After": "1" },
    );
  }
  // Fewer open than a share: no visitor can hold its share yet (and no socket is looked up).
  if (open < t.settings.maxStreamsPerVisitor) return;
  const held =
    t.streams.heldBy(from) +
    (sockets > 0 ? t.sockets.heldBy(from) : 0) +
    t.admitted.of(from) +
    (t.tcp.size > 0 ? t.tcp.heldBy(from) : 0);
  checkShare(from, held, t.settings.maxStreamsPerVisitor, "requests and WebSockets open");
}

/** Sends a visitor to shard `to` of its tunnel, marked so that it goes no further. */
export function forwardToShard(t: TunnelCore, request: VisitRequest, head: VisitHead, to: number): Promise<Response> {
  const headers = new Headers(request.headers);
  if (headers.has(INTERNAL.head)) {
    headers.set(INTERNAL.head, JSON.stringify({ ...head, shard: to, forwarded: true, asks: undefined }));
  } else {
    headers.set(INTERNAL.shard, `${to}!`);
  }
  const peer = t.host.tunnel(shardObjectName(head.tunnel, to));
  if (request instanceof Request) return peer.fetch(new Request(request, { headers }));
  return peer.fetch(VISIT_URL, { method: request.method, headers, body: request.body, redirect: "manual" });
}

/** The connected agent's rules, from memory or (after a wake from hibernation) storage. */
export async function visitorRules(t: TunnelCore): Promise<RuleSet | null> {
  if (t.rules === undefined) {
    const stored = await t.host.storage.get<HelloFrame["rules"]>(RULES_KEY);
    t.rules = stored ? new RuleSet(stored) : null;
  }
  return t.rules;
}

/**
 * The agent, once it is back, if it dropped without saying goodbye moments ago (or was
 * connected when this relay restarted); undefined if it does not return within
 * AGENT_RETURN_WAIT_MS.
 */
export async function agentBack(t: TunnelCore): Promise<AgentSession | undefined> {
  const record = await t.host.storage.get<NameRecord & { dropped?: boolean }>(NAME_KEY);
  const now = Date.now();
  // A shard keeps no record: its visitors wait while its session waits for its agent.
  const since =
    t.shard > 0 ? (t.current ? now : undefined) : record?.connected ? t.bootedAt : record?.dropped ? record.lastUsed : undefined;
  if (since === undefined || now > since + AGENT_RETURN_WAIT_MS) return undefined;
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => {
        t.returning.delete(waiter);
        resolve(undefined);
      },
      since + AGENT_RETURN_WAIT_MS - now,
    );
    const waiter = (agent: AgentSession) => {
      clearTimeout(timer);
      resolve(agent);
    };
    t.returning.add(waiter);
  });
}

/** Stream ids are unique per Durable Object instance; the random start keeps them unique across wake-ups. */
export function nextStreamId(t: TunnelCore): number {
  const id = t.nextStreamId();
  return id;
}

/**
 * A visitor's request as the Worker handed it over (see app.ts visit), in one pass over its
 * fields: the INTERNAL ones read, the hop-by-hop ones the runtime may add to this hop
 * (Transfer-Encoding) dropped, the rest as the RequestHead frame carries them.
 */
function visitorHead(fields: Headers): VisitHead & { upgrade: boolean; contentLength: number | undefined } {
  const json = fields.get(INTERNAL.head);
  if (json !== null) {
    const head = JSON.parse(json) as VisitHead;
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
