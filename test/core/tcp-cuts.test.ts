// A TCP tunnel's sessions across what cuts them on the relay's side: a Durable Object that
// hibernates while an ssh session is quiet (its memory gone, its WebSockets and their
// attachments kept; see tcp-hibernation.test.ts), with cuts before and after, and an agent whose
// session ends while visitors' streams are open.
import {
  CONNECTOR_ROLE,
  type ConnectFrame,
  type Frame,
  FrameType,
  hashConnectKey,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  PROTOCOL_VERSION,
  type ReadyFrame,
} from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { type MemoryAgent, type MemoryLink, MemoryRelay, NO_RULES, quietWarnings, tick } from "./_host.ts";

const KEY = "key-of-devbox-0123456789";
/** A moment past PERSIST_MS (tunnel-state.ts): the relay has saved a quiet session by then. */
const SAVED_MS = 1300;

async function tcpAgent(relay: MemoryRelay, fields: { resume?: { session: string; received: number } } = {}) {
  const connectKeys = [await hashConnectKey("devbox", KEY)];
  return relay.agent("devbox", { tcp: true, rules: { ...NO_RULES, connectKeys }, ...fields });
}

/** A visitor's `agent connect` the relay answered Ready. */
async function connector(relay: MemoryRelay, resume: ConnectFrame["resume"] = null): Promise<MemoryAgent> {
  const link = await relay.connect("devbox", undefined, `&role=${CONNECTOR_ROLE}`);
  await link.deliver({
    type: FrameType.Connect,
    version: PROTOCOL_VERSION,
    client: "core-test",
    name: "devbox",
    key: KEY,
    resume,
  });
  const ready = await link.next();
  if (ready.type !== FrameType.Ready) throw new Error(`the core did not answer Ready: ${JSON.stringify(ready)}`);
  return { link, ready: ready as ReadyFrame };
}

/** The frames of the session `link` got (Ready, Refused and Acks are not counted). */
function counted(link: MemoryLink): Frame[] {
  return link.frames().filter((f) => f.type !== FrameType.Ready && f.type !== FrameType.Refused && f.type !== FrameType.Ack);
}

/** The peer on `link` acknowledges every frame of the session it got, as agents do within ACK_DELAY_MS. */
async function ack(link: MemoryLink, before = 0): Promise<void> {
  await tick(20);
  await link.deliver({ type: FrameType.Ack, received: before + counted(link).length });
}

const bytes = (n: number) => new Uint8Array(n).fill(7);

/** A stream the visitor opened, joined to the agent's; both sides then quiet and acknowledged. */
async function joined(relay: MemoryRelay) {
  const agent = await tcpAgent(relay);
  const visitor = await connector(relay);
  await visitor.link.deliver({ type: FrameType.Open, stream: 1, from: "" });
  const open = await agent.link.nextOf(FrameType.Open);
  return { agent, visitor, agentStream: open.stream };
}

describe("a TCP tunnel's relay hibernating while its streams are quiet", () => {
  it("takes back credit for bytes sent before the wake, and still bounds what a side sends", async () => {
    const relay = new MemoryRelay();
    const { agent, visitor, agentStream } = await joined(relay);
    await visitor.link.deliver({ type: FrameType.Data, stream: 1, bytes: bytes(1000) });
    expect((await agent.link.nextOf(FrameType.Data)).stream).toBe(agentStream);
    await agent.link.deliver({ type: FrameType.Data, stream: agentStream, bytes: bytes(500) });
    expect(await visitor.link.nextOf(FrameType.Data)).toMatchObject({ stream: 1 });
    await Promise.all([ack(agent.link), ack(visitor.link)]);
    await tick(SAVED_MS);

    await relay.object("devbox").hibernate();
    await visitor.link.deliver({ type: FrameType.Data, stream: 1, bytes: bytes(2000) });
    expect(await agent.link.nextOf(FrameType.Data)).toMatchObject({ stream: agentStream, bytes: bytes(2000) });
    // The agent gives back all 3000 bytes, 1000 of them sent before the relay slept; the
    // visitor gives back the agent's 500.
    await agent.link.deliver({ type: FrameType.Credit, stream: agentStream, bytes: 3000 });
    expect(await visitor.link.nextOf(FrameType.Credit)).toEqual({ type: FrameType.Credit, stream: 1, bytes: 3000 });
    await visitor.link.deliver({ type: FrameType.Credit, stream: 1, bytes: 500 });
    expect(await agent.link.nextOf(FrameType.Credit)).toEqual({ type: FrameType.Credit, stream: agentStream, bytes: 500 });
    // Both sessions went on where they were: their peers' Acks fit what the relay sent.
    await Promise.all([ack(agent.link), ack(visitor.link)]);
    await tick(20);
    expect([agent.link.closed, visitor.link.closed]).toEqual([undefined, undefined]);
    expect([...agent.link.pending(), ...visitor.link.pending()]).toEqual([]);
    // A window's worth and a byte more, with no credit: the relay still resets the stream.
    quietWarnings();
    for (let sent = 0; sent <= INITIAL_WINDOW; sent += MAX_DATA_CHUNK) {
      await visitor.link.deliver({
        type: FrameType.Data,
        stream: 1,
        bytes: bytes(Math.min(MAX_DATA_CHUNK, INITIAL_WINDOW + 1 - sent)),
      });
    }
    expect(await visitor.link.nextOf(FrameType.Reset)).toMatchObject({ stream: 1, code: "protocol-error" });
  });

  it("wakes with the streams of a visitor and an agent that resumed after a cut and stayed quiet", async () => {
    const relay = new MemoryRelay();
    const first = await joined(relay);
    // Frames each way, so that each session's counts are more than 0.
    await first.visitor.link.deliver({ type: FrameType.Data, stream: 1, bytes: bytes(5) });
    await first.agent.link.deliver({ type: FrameType.Data, stream: first.agentStream, bytes: bytes(5) });
    await first.visitor.link.nextOf(FrameType.Data);
    await Promise.all([ack(first.agent.link), ack(first.visitor.link)]);
    await tick(SAVED_MS);
    first.agent.link.cut(1006);
    const agent = await tcpAgent(relay, {
      resume: { session: first.agent.ready.session, received: counted(first.agent.link).length },
    });
    expect(agent.ready.resumed).toBe(true);
    first.visitor.link.cut(1006);
    const visitor = await connector(relay, {
      session: first.visitor.ready.session,
      received: counted(first.visitor.link).length,
    });
    expect(visitor.ready.resumed).toBe(true);
    await tick(SAVED_MS);

    await relay.object("devbox").hibernate();
    await visitor.link.deliver({ type: FrameType.Data, stream: 1, bytes: bytes(10) });
    expect(await agent.link.nextOf(FrameType.Data)).toMatchObject({ stream: first.agentStream });
    await agent.link.deliver({ type: FrameType.Data, stream: first.agentStream, bytes: bytes(20) });
    expect(await visitor.link.nextOf(FrameType.Data)).toMatchObject({ stream: 1 });
    // Counted from where each session was, the Acks fit.
    await Promise.all([ack(agent.link, counted(first.agent.link).length), ack(visitor.link, counted(first.visitor.link).length)]);
    await tick(20);
    expect([agent.link.closed, visitor.link.closed]).toEqual([undefined, undefined]);
  });

  it("wakes with a quiet agent's session when a cut wakes it: the agent resumes it, the visitor's stream goes on", async () => {
    const relay = new MemoryRelay();
    const first = await joined(relay);
    await Promise.all([ack(first.agent.link), ack(first.visitor.link)]);
    await tick(SAVED_MS);

    await relay.object("devbox").hibernate();
    first.agent.link.cut(1006);
    const agent = await tcpAgent(relay, {
      resume: { session: first.agent.ready.session, received: counted(first.agent.link).length },
    });
    expect(agent.ready.resumed).toBe(true);
    await first.visitor.link.deliver({ type: FrameType.Data, stream: 1, bytes: bytes(10) });
    expect(await agent.link.nextOf(FrameType.Data)).toMatchObject({ stream: first.agentStream });
    expect(first.visitor.link.pending()).toEqual([]);
  });
  it("wakes with a quiet visitor's session when its cut wakes it: the visitor resumes it, its stream goes on", async () => {
    const relay = new MemoryRelay();
    const first = await joined(relay);
    await Promise.all([ack(first.agent.link), ack(first.visitor.link)]);
    await tick(SAVED_MS);

    await relay.object("devbox").hibernate();
    first.visitor.link.cut(1006);
    const visitor = await connector(relay, {
      session: first.visitor.ready.session,
      received: counted(first.visitor.link).length,
    });
    expect(visitor.ready.resumed).toBe(true);
    await first.agent.link.deliver({ type: FrameType.Data, stream: first.agentStream, bytes: bytes(10) });
    expect(await visitor.link.nextOf(FrameType.Data)).toMatchObject({ stream: 1 });
    expect(first.agent.link.pending()).toEqual([]);
  });
});

describe("a TCP tunnel whose agent's session ends", () => {
  it("resets each visitor's streams with the reason before closing its connect", async () => {
    quietWarnings();
    const relay = new MemoryRelay();
    const { agent, visitor } = await joined(relay);
    agent.link.cut(1000, "agent stopped");
    expect(await visitor.link.nextOf(FrameType.Reset)).toEqual({
      type: FrameType.Reset,
      stream: 1,
      code: "cancelled",
      message: 'The agent for tunnel "devbox" stopped.',
    });
    expect(visitor.link.closed?.code).toBe(1012);
  });
});
