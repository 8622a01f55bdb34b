import {
  CloseCode,
  type Frame,
  FrameType,
  HEARTBEAT,
  type HelloFrame,
  type InvalidFrame,
  randomId,
  unackedLimit,
} from "@burrow/protocol";
import { type Admission, admit, type NameRecord } from "./admission.ts";
import type { Link } from "./host.ts";
import { LIVENESS_PROBE_MS } from "./limits.ts";
import { PollingLink } from "./polling.ts";
import { RuleSet } from "./rules.ts";
import { AgentSession } from "./session.ts";
import { cancelTimer } from "./timers.ts";
import type { TunnelCore } from "./tunnel.ts";
import { closeConnectors } from "./tunnel-connect.ts";
import { closePort, openPort, type PortAnswer } from "./tunnel-ports.ts";
import { evictShards, reportShard, shardZero } from "./tunnel-shards.ts";
import {
  type Attachment,
  type HelloAttachment,
  NAME_GRACE_MS,
  NAME_KEY,
  PERSIST_MS,
  REFRESH_MS,
  type ReadyAttachment,
  RULES_KEY,
} from "./tunnel-state.ts";

/** Judges the hello; returns whether the link is now the tunnel's agent. */
/**
 * Judges the hello. Accepted, the link carries the agent's session from now on: the one it
 * asks to resume, when that is still here, its own and where the agent says it got to, or
 * else a new one (a previous session's streams then end). Returns the session, or undefined.
 */
export async function hello(
  t: TunnelCore,
  socket: Link,
  frame: Frame | InvalidFrame | undefined,
  attachment: HelloAttachment,
): Promise<AgentSession | undefined> {
  const tokens = await t.tokenList();
  const previous = t.agent() ?? t.current;
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
  } else if (frame.tcp && (frame.rules.basicAuth.length > 0 || frame.rules.webhooks.length > 0)) {
    verdict = {
      ok: false,
      code: "bad-hello",
      message:
        "a TCP tunnel carries bytes, not HTTP requests: --basic-auth and --verify-webhook cannot apply to it (use connect keys and --allow-ip)",
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
      const answer = await shardZero(t, attachment.name).admitShard(frame, attachment.shard, attachment.name);
      verdict = answer.admission;
      shardRules = answer.rules;
      primary = answer.primary;
    } else {
      verdict = await admit({
        hello: frame,
        requested: attachment.name,
        tokens,
        record: await t.host.storage.get<NameRecord>(NAME_KEY),
        liveOwner: live ? previous?.owner : undefined,
        now: Date.now(),
        bootedAt: t.bootedAt,
        policy: { nameTtlMs: t.settings.nameTtlMs, graceMs: NAME_GRACE_MS, allowPunycode: t.settings.allowPunycodeNames },
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
    !(frame.resume !== null && previous === t.current && frame.resume.session === previous?.id) &&
    (await answers(t, live))
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
    verdict = await holdForToken(t, verdict, attachment.name);
  }
  // A TCP tunnel's public port (self-hosted with --tcp-ports), opened before anything changes:
  // its Ready says where it is.
  // Only when the tunnel's owner asks (--public-port): a TCP tunnel is private by default.
  let port: PortAnswer | undefined;
  if (verdict.ok && !attachment.shard && frame?.type === FrameType.Hello && frame.tcp) {
    if (frame.publicPort) port = await openPort(t, attachment.url);
    else closePort(t); // an earlier agent of this name asked for one; this one does not
  }
  // The link may have dropped while the hello was judged.
  if (t.ended.has(socket)) {
    if (verdict.ok && !counted) t.host.waitUntil(releaseForToken(t, verdict.owner, attachment.name));
    // The port stays open only for a TCP agent that is here or on its way back.
    if (port && !(t.agent() ?? t.current)?.tcp) closePort(t);
    return undefined;
  }
  if (!verdict.ok) {
    t.sendAlone(socket, { type: FrameType.Refused, code: verdict.code, message: verdict.message });
    // The reason too says why, for a client that reads no Refused frame (close truncates it).
    t.close(socket, CloseCode.Refused, `${verdict.code}: ${verdict.message}`);
    return undefined;
  }
  const hello = frame as HelloFrame;
  const resume = hello.resume;
  const resumed =
    resume !== null &&
    previous !== undefined &&
    previous === t.current &&
    resume.session === previous.id &&
    previous.owner === verdict.owner &&
    previous.frames.canResume(resume.received);
  if (live) {
    const why = resumed
      ? "the same agent resumed its session on a newer connection"
      : verdict.owner.startsWith("token:")
        ? "replaced by a newer connection holding the same token"
        : "replaced by a newer connection of the same agent";
    t.close(live, CloseCode.Replaced, why);
  }
  if (previous && !resumed) {
    endSession(t, previous, `The agent for tunnel "${hello.name}" reconnected as a new session; retry the request.`, true);
  }
  // An HTTP tunnel now (its agent was a TCP tunnel's): no port.
  if (!hello.tcp && !attachment.shard) closePort(t);
  // Visitor WebSockets of a session this object no longer knows (it was evicted meanwhile)
  // have nobody to talk to.
  if (!resumed) t.sockets.closeAll("the tunnel's agent reconnected as a new session");
  const session = resumed
    ? previous
    : new AgentSession(randomId(), verdict.owner, verdict.label, unackedLimit(t.settings.maxStreams), undefined, t.defer);
  session.tcp = hello.tcp ?? false;
  t.current = session;
  t.setAttachment(socket, {
    phase: "ready",
    shard: attachment.shard,
    name: attachment.name,
    url: attachment.url,
    owner: verdict.owner,
    label: verdict.label,
    session: session.id,
    primary,
    tcp: hello.tcp || undefined,
  } satisfies Attachment);
  const now = Date.now();
  const ruleList = shardRules ?? hello.rules;
  const rules = new RuleSet(ruleList);
  t.rules = rules.empty ? null : rules;
  t.rulesGeneration++;
  await Promise.all([
    // A shard keeps no name: shard 0 does.
    attachment.shard
      ? undefined
      : t.host.storage.put(NAME_KEY, {
          owner: verdict.owner,
          label: verdict.label,
          lastUsed: now,
          connected: true,
        } satisfies NameRecord),
    rules.empty ? t.host.storage.delete(RULES_KEY) : t.host.storage.put(RULES_KEY, ruleList),
    attachment.shard ? undefined : t.host.storage.setAlarm(now + REFRESH_MS),
    // Shard 0, a new session: the shards of the one before it leave (see evictStale).
    attachment.shard || resumed ? undefined : evictShards(t, attachment.name, session.id),
  ]);
  if (t.ended.has(socket)) return undefined;
  // Ready travels outside the session, alone; what the agent had not received follows it.
  t.sendAlone(socket, {
    type: FrameType.Ready,
    name: attachment.name,
    url: port?.url ?? attachment.url,
    open: tokens.entries.length === 0,
    session: session.id,
    resumed,
    received: session.frames.received,
    tcp: hello.tcp ?? false,
    notice: port?.notice ?? "",
  });
  use(t, session, socket, resumed ? resume.received : 0);
  if (attachment.shard) reportShard(t, attachment.name, attachment.shard, true);
  for (const waiter of t.returning) waiter(session);
  t.returning.clear();
  return session;
}

/**
 * Whether the agent on `link` is alive: asked with a ping (an agent answers with a pong; on
 * the HTTPS transport the waiting poll is answered and the agent's next poll is the sign),
 * and any message from it within LIVENESS_PROBE_MS counts. An agent from before the ping
 * was answered stays silent and is taken for dead: it is replaced, as it always was.
 */
export function answers(t: TunnelCore, link: Link): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (alive: boolean) => {
      clearTimeout(timer);
      if (t.probes.get(link) === done) t.probes.delete(link);
      resolve(alive);
    };
    const timer = setTimeout(() => done(false), LIVENESS_PROBE_MS);
    // Its close ends the wait at once (see dropped).
    t.probes.set(link, done);
    try {
      if (link instanceof PollingLink) link.nudge();
      else link.send(HEARTBEAT.ping);
    } catch {
      done(false); // the socket is closing already
    }
  });
}

/** `link` carries `session` from now on (it had received `peerReceived` of its frames). */
export function use(t: TunnelCore, session: AgentSession, link: Link, peerReceived: number): void {
  session.attach(link, peerReceived);
  persistCounts(t, session);
  // An agent that provokes frames (a Reset for each frame of a stream that does not exist) and
  // never acknowledges them would have the relay keep them all: past the bound its session
  // ends, and what it kept goes with it.
  session.frames.onOverflow = (why) => {
    const current = session.link;
    const name = current ? (t.attachment(current) as ReadyAttachment).name : "";
    console.warn(`tunnel ${name}: closing the agent's connection: it ${why}`);
    if (current) t.close(current, CloseCode.Unacknowledged, `the agent ${why}`);
    endSession(t, session, `The tunnel's agent stopped acknowledging what the relay sent (it ${why}); retry the request.`);
  };
}

/**
 * Keeps the counts a wake from hibernation needs in the attachment of the link that carries
 * `session` (an agent's or a visitor's connect): idle and with nothing kept, they are all it
 * needs. Written PERSIST_MS after the session went quiet, if it still is (a serializeAttachment
 * at every quiet moment, i.e. after each request at c=1, cost the relay about 30 µs per
 * request); the timer keeps the object from hibernating until then, and each new quiet moment
 * sets it again, so the counts written last are those it hibernates with.
 */
export function persistCounts(t: TunnelCore, session: AgentSession): void {
  session.frames.onQuiescent = () => {
    if (session.persistTimer) return;
    session.persistTimer = setTimeout(() => {
      session.persistTimer = undefined;
      // The link that carries the session now: a timer set before a resume writes to the new one.
      const current = session.link;
      if (!current || t.ended.has(current) || !session.frames.quiescent) return;
      const attachment = t.attachment(current) as ReadyAttachment | Extract<Attachment, { phase: "connector" }>;
      t.setAttachment(current, { ...attachment, counts: session.frames.snapshot() } satisfies Attachment);
    }, PERSIST_MS);
  };
  // A session resumed with nothing in flight may stay quiet from here on, and its new link's
  // attachment has no counts yet: a wake from hibernation would start it from 0 (the peer's
  // next Ack, of more than that, would then end it as a protocol error).
  if (session.frames.quiescent) session.frames.onQuiescent();
}

/**
 * The session is over: its streams fail, its visitors' WebSockets close, and unless a new
 * session `replaced` it (which opens the port again at once), a public TCP port stops listening.
 */
export function endSession(t: TunnelCore, session: AgentSession, why: string, replaced = false): void {
  cancelTimer(session.resumeTimer);
  session.frames.end();
  t.streams.failSocket(session, 502, "agent-disconnected", why);
  if (t.current === session) {
    t.current = undefined;
    t.sockets.closeAll(why);
    closeConnectors(t, why);
    if (!replaced) closePort(t);
  }
}

/**
 * Counts this tunnel among its token's (TUNNELS_PER_TOKEN), in the token's gate. Names the
 * gate lists whose tunnels no longer have that token's agent (their relay restarted, say)
 * are dropped from the count before the token is refused.
 */
export async function holdForToken(t: TunnelCore, admission: Extract<Admission, { ok: true }>, name: string): Promise<Admission> {
  const gate = t.host.gate(admission.owner);
  const limit = t.settings.tunnelsPerToken;
  let answer = await gate.hold(name, limit);
  if (answer.ok) return admission;
  const stale: string[] = [];
  for (const other of answer.held) {
    const tunnel = t.host.tunnel(other);
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

export async function releaseForToken(t: TunnelCore, owner: string, name: string): Promise<void> {
  // The same owner holds the tunnel again (a twin connection, a resumed session): keep it counted.
  if (!owner.startsWith("token:") || t.current?.owner === owner || t.shard > 0) return;
  await t.host.gate(owner).release(name);
}
