import {
  CloseCode,
  CONNECTOR_ROLE,
  type ConnectFrame,
  decodeMessage,
  type Frame,
  FrameType,
  hashConnectKey,
  type InvalidFrame,
  PROTOCOL_VERSION,
  ProtocolError,
  type RefusalCode,
  randomId,
  sameBytes,
  unackedLimit,
} from "@burrow/protocol";
import { parseIp } from "./cidr.ts";
import { isTeardownNoise } from "./errors.ts";
import type { Link } from "./host.ts";
import { AgentSession } from "./session.ts";
import { CONNECTOR_SLOTS, type Connector } from "./tcp.ts";
import { cancelTimer } from "./timers.ts";
import type { TunnelCore } from "./tunnel.ts";
import { withinRate } from "./tunnel-frames.ts";
import { persistCounts } from "./tunnel-hello.ts";
import { visitorRules } from "./tunnel-visit.ts";

// A visitor's `agent connect` on the relay: its link says Connect instead of Hello, is judged
// against the TCP tunnel's rules (a key, --allow-ip), and then carries a session of its own,
// resumable after a cut like the agent's, whose streams tcp.ts joins to the agent's.

/** The hibernation tag of connectors' links (agents' carry AGENT_TAG). */
export const CONNECTOR_TAG = "connector";

/** What a connector's link remembers (its attachment). */
export type ConnectorAttachment =
  | { phase: "connect"; name: string; url: string; from: string }
  | {
      phase: "connector";
      name: string;
      url: string;
      from: string;
      session: string;
      /** Who may resume the session: the hash of its key. */
      owner: string;
      /** Its block of the agent's stream ids (see tcp.ts). */
      slot: number;
      /** The session's counts when it was last quiescent (see FrameSession.snapshot). */
      counts?: { sent: number; received: number };
    };

export { CONNECTOR_ROLE };

/** A new connector link: it has HELLO_TIMEOUT_SECONDS to say Connect. */
export function awaitConnect(t: TunnelCore, link: Link, request: Request, url: URL, from: string): void {
  t.setAttachment(link, {
    phase: "connect",
    name: url.searchParams.get("name") ?? "",
    url: request.headers.get("x-burrow-public-url") ?? "",
    from,
  } satisfies ConnectorAttachment);
  t.helloDeadline(link, "connect");
}

/** One message of frames from a connector, on either transport. */
export async function fromConnector(t: TunnelCore, link: Link, message: Uint8Array): Promise<void> {
  if (t.ended.has(link)) return;
  const attachment = t.attachment(link) as ConnectorAttachment;
  try {
    const counted = { frames: 0 };
    const frames = decodeMessage(message, counted);
    if (!withinRate(t, link, frames.length, message.byteLength, "a visitor's connect")) {
      if (attachment.phase === "connector") endConnector(t, attachment.session, "it sent faster than the relay allows");
      return;
    }
    if (attachment.phase === "connector") {
      const connector = t.connectors.get(attachment.session) ?? restore(t, link, attachment);
      if (!connector || connector.session.link !== link) return;
      for (const frame of connector.session.frames.take(frames, counted.frames)) {
        if (connector.session.frames.ended) break;
        serve(t, connector, frame);
      }
      return;
    }
    const [first, ...rest] = frames;
    const connector = await judge(t, link, first, attachment);
    if (!connector) return;
    for (const frame of connector.session.frames.take(rest, counted.frames - 1)) serve(t, connector, frame);
  } catch (error) {
    if (error instanceof ProtocolError) {
      console.warn(`tunnel ${attachment.name}: closing a visitor's connect: ${error.message}`);
      t.close(link, CloseCode.ProtocolError, `protocol error: ${error.message}`);
      if (attachment.phase === "connector") endConnector(t, attachment.session, `it broke the protocol: ${error.message}`);
    } else if (!isTeardownNoise(error)) {
      console.error(`tunnel ${attachment.name}: a message from a visitor's connect failed`, error);
    }
  }
}

/** Judges a Connect: the tunnel must be a TCP tunnel with its agent here, the key and address its rules'. */
async function judge(
  t: TunnelCore,
  link: Link,
  frame: Frame | InvalidFrame | undefined,
  attachment: Extract<ConnectorAttachment, { phase: "connect" }>,
): Promise<Connector | undefined> {
  const refuse = (code: RefusalCode, message: string) => {
    t.sendAlone(link, { type: FrameType.Refused, code, message });
    t.close(link, CloseCode.Refused, `${code}: ${message}`);
    return undefined;
  };
  if (frame?.type !== FrameType.Connect) {
    return refuse("bad-hello", "the first frame of a visitor's connect must be a Connect");
  }
  if (frame.version !== PROTOCOL_VERSION) {
    const newer = frame.version > PROTOCOL_VERSION;
    return refuse(
      "version-mismatch",
      `this relay speaks protocol ${PROTOCOL_VERSION} and the visitor's agent ${frame.version}: upgrade the ${newer ? "relay" : "agent that runs connect"}`,
    );
  }
  if (frame.name !== attachment.name) {
    return refuse(
      "bad-hello",
      `the Connect asks for tunnel ${JSON.stringify(frame.name)} but the connection was opened for ${JSON.stringify(attachment.name)}`,
    );
  }
  const agent = t.agent() ?? t.current;
  if (!agent) {
    return refuse("agent-offline", `no agent serves tunnel "${frame.name}" on this relay now`);
  }
  if (!agent.tcp) {
    return refuse("not-tcp", `tunnel "${frame.name}" is an HTTP tunnel: open its URL in a browser instead`);
  }
  const rules = await visitorRules(t);
  const refusal = await check(t, frame, attachment.from, rules?.rules.connectKeys ?? [], rules);
  if (refusal) return refuse(refusal.code, refusal.message);
  if (t.ended.has(link)) return undefined;
  const owner = `key:${await hashConnectKey(frame.name, frame.key)}`;
  // A connector resumes its own session only: the same key, the id it was given.
  const previous = frame.resume ? t.connectors.get(frame.resume.session) : undefined;
  const resumed =
    previous !== undefined && previous.session.owner === owner && previous.session.frames.canResume(frame.resume!.received);
  if (previous && resumed && previous.session.link && previous.session.link !== link) {
    t.close(previous.session.link, CloseCode.Replaced, "the visitor resumed its session on a newer connection");
  }
  let connector: Connector;
  if (resumed) connector = previous;
  else {
    const slot = freeSlot(t);
    if (slot === undefined) {
      return refuse(
        "rate-limited",
        `tunnel "${frame.name}" has ${CONNECTOR_SLOTS} visitors' connects open, its most; retry later`,
      );
    }
    const session = new AgentSession(randomId(), owner, attachment.from, unackedLimit(t.settings.maxStreams), undefined, t.defer);
    connector = { session, slot, restored: false, from: attachment.from, streams: new Map() };
  }
  t.connectors.set(connector.session.id, connector);
  t.setAttachment(link, {
    ...attachment,
    phase: "connector",
    session: connector.session.id,
    owner,
    slot: connector.slot,
  } satisfies ConnectorAttachment);
  t.sendAlone(link, {
    type: FrameType.Ready,
    name: attachment.name,
    url: attachment.url,
    open: false,
    session: connector.session.id,
    resumed,
    received: connector.session.frames.received,
    tcp: true,
  });
  carry(t, connector, link, resumed ? frame.resume!.received : 0, attachment.name);
  return connector;
}

/** `link` carries the connector's session from now on (it had received `peerReceived` of its frames). */
function carry(t: TunnelCore, connector: Connector, link: Link, peerReceived: number, name: string): void {
  const session = connector.session;
  session.attach(link, peerReceived);
  // A connector that never acknowledges has its session end at the bound, as an agent's does.
  session.frames.onOverflow = (why) => {
    console.warn(`tunnel ${name}: closing a visitor's connect: it ${why}`);
    if (session.link) t.close(session.link, CloseCode.Unacknowledged, `the visitor ${why}`);
    endConnector(t, session.id, `it ${why}`);
  };
  persistCounts(t, session);
}

/** A free connector slot: none of the open connectors' (on their links, after a wake too). */
function freeSlot(t: TunnelCore): number | undefined {
  const used = new Set<number>();
  for (const connector of t.connectors.values()) used.add(connector.slot);
  for (const link of connectorLinks(t)) {
    const attachment = t.attachment(link) as ConnectorAttachment;
    if (attachment.phase === "connector") used.add(attachment.slot);
  }
  if (used.size >= CONNECTOR_SLOTS) return undefined;
  for (;;) {
    const slot = Math.floor(Math.random() * CONNECTOR_SLOTS);
    if (!used.has(slot)) return slot;
  }
}

/** Connectors' links, on either transport. */
export function connectorLinks(t: TunnelCore): Link[] {
  return [...t.host.links.byTag(CONNECTOR_TAG), ...[...t.pollingLinks.values()].filter((link) => link.connector)];
}

/**
 * The connector on `link` after a wake from hibernation: its session as it was when last
 * quiescent (the runtime hibernates an object only when nothing is in flight), its routes
 * made anew as their frames come (see tcp.ts).
 */
function restore(
  t: TunnelCore,
  link: Link,
  attachment: Extract<ConnectorAttachment, { phase: "connector" }>,
): Connector | undefined {
  if (t.ended.has(link)) return undefined;
  const session = new AgentSession(
    attachment.session,
    attachment.owner,
    attachment.from,
    unackedLimit(t.settings.maxStreams),
    attachment.counts,
    t.defer,
  );
  const connector: Connector = { session, slot: attachment.slot, restored: true, from: attachment.from, streams: new Map() };
  t.connectors.set(session.id, connector);
  carry(t, connector, link, attachment.counts?.sent ?? 0, attachment.name);
  return connector;
}

/**
 * A wake from hibernation (the host's start): every connector found again from its link before
 * any event of it, a close among them (its session then waits for the visitor, as when it was in
 * memory, instead of being forgotten: the visitor's resume would find none).
 */
export function wakeConnectors(t: TunnelCore): void {
  for (const link of connectorLinks(t)) {
    const attachment = t.attachment(link) as ConnectorAttachment;
    if (attachment.phase === "connector" && !t.connectors.has(attachment.session)) restore(t, link, attachment);
  }
}

/** The connector in `slot`, found again from the links after a wake if need be (see tcp.ts). */
export function connectorInSlot(t: TunnelCore, slot: number): Connector | undefined {
  for (const connector of t.connectors.values()) if (connector.slot === slot) return connector;
  for (const link of connectorLinks(t)) {
    const attachment = t.attachment(link) as ConnectorAttachment;
    if (attachment.phase === "connector" && attachment.slot === slot && !t.ended.has(link)) return restore(t, link, attachment);
  }
  return undefined;
}

/** The refusal for a Connect that the tunnel's rules do not let in, or undefined. */
async function check(
  t: TunnelCore,
  frame: ConnectFrame,
  from: string,
  keys: readonly string[],
  rules: Awaited<ReturnType<typeof visitorRules>>,
): Promise<{ code: RefusalCode; message: string } | undefined> {
  if (rules && !rules.admitsAddress(from ? parseIp(from) : undefined)) {
    return { code: "forbidden", message: "this tunnel does not admit visitors from your address (its --allow-ip)" };
  }
  if (keys.length === 0) {
    return {
      code: "unauthorized",
      message: `tunnel "${frame.name}" gives no keys: its owner reaches it through a public port or gives keys with --connect-key-file`,
    };
  }
  // Every key is compared, so the time does not tell which (if any) matched.
  const given = new TextEncoder().encode(await hashConnectKey(frame.name, frame.key));
  let ok = false;
  for (const hash of keys) ok = sameBytes(given, new TextEncoder().encode(hash)) || ok;
  if (!ok) {
    return {
      code: "unauthorized",
      message: frame.key ? "the key is not one of this tunnel's" : "this tunnel asks for a key",
    };
  }
  void t;
  return undefined;
}

/** One frame from a ready connector. */
function serve(t: TunnelCore, connector: Connector, frame: Frame | InvalidFrame): void {
  switch (frame.type) {
    case "invalid":
      connector.session.push({
        type: FrameType.Reset,
        stream: frame.stream,
        code: "protocol-error",
        message: frame.error.message,
      });
      return;
    case FrameType.Open: {
      const agent = t.agent() ?? t.current;
      // A connector holds one of the tunnel's keys: no share per address (MAX_STREAMS_PER_VISITOR
      // guards tunnels anyone may reach), the tunnel's limit only.
      const full = openStreams(t) >= t.settings.maxStreams;
      if (!agent || full) {
        const message = !agent
          ? "the tunnel's agent is not connected"
          : `the tunnel has ${t.settings.maxStreams} connections open, its limit (MAX_STREAMS_PER_TUNNEL); retry in a moment`;
        connector.session.push({ type: FrameType.Reset, stream: frame.stream, code: "too-many-streams", message });
        return;
      }
      const violation = t.tcp.open(connector, frame.stream);
      if (violation)
        connector.session.push({ type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: violation });
      return;
    }
    case FrameType.Data:
    case FrameType.End:
    case FrameType.Credit:
    case FrameType.Reset:
      t.tcp.fromConnector(connector, frame);
      return;
    default:
      throw new ProtocolError(
        "malformed-frame",
        `the relay does not accept a frame of type ${frame.type} from a visitor's connect`,
      );
  }
}

/** Every stream the tunnel holds, of every kind, against MAX_STREAMS_PER_TUNNEL. */
export function openStreams(t: TunnelCore): number {
  return t.streams.size + t.sockets.count + t.admitted.total + t.tcp.size;
}

/**
 * A connector's link left: its session waits RESUME_SECONDS for the visitor to come back
 * (a Wi-Fi change), its streams paused; a clean close ends it at once.
 */
export function connectorDropped(t: TunnelCore, link: Link, code: number): void {
  const attachment = t.attachment(link) as ConnectorAttachment;
  t.close(link, 1000, "closed");
  if (attachment.phase !== "connector") return;
  const connector = t.connectors.get(attachment.session);
  if (!connector || connector.session.link !== link) return;
  connector.session.detach();
  if (code === CloseCode.Normal) {
    endConnector(t, attachment.session, "the visitor disconnected");
    return;
  }
  cancelTimer(connector.session.resumeTimer);
  connector.session.resumeTimer = setTimeout(() => {
    if (!connector.session.link)
      endConnector(t, attachment.session, `the visitor did not come back within ${t.settings.resumeMs / 1000}s`);
  }, t.settings.resumeMs);
}

/** The connector's session is over: its streams are reset at the agent. */
export function endConnector(t: TunnelCore, id: string, why: string): void {
  const connector = t.connectors.get(id);
  if (!connector) return;
  t.connectors.delete(id);
  cancelTimer(connector.session.resumeTimer);
  connector.session.frames.end();
  t.tcp.endConnector(connector, `the visitor's connect ended: ${why}`);
}

/**
 * The agent's session changed (a new one, not a resume) or ended: every connector leaves, to
 * connect again and be judged under the rules of now (a new agent may give other keys).
 */
export function closeConnectors(t: TunnelCore, why: string): void {
  t.tcp.endAll(why);
  for (const [id, connector] of t.connectors) {
    const link = connector.session.link;
    // The Resets just queued go out before the session ends (an ended session drops what it
    // has queued): the visitor's connect ends each local connection with `why`, instead of
    // holding it open while it waits for the agent.
    connector.session.detach();
    endConnector(t, id, why);
    if (link) t.close(link, 1012, why);
  }
}
