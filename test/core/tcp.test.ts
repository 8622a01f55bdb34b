// TCP tunnels in the core: an agent's hello with `tcp`, a visitor's `agent connect` (a
// connector: Connect judged, then a session of its own) and its streams joined to the agent's,
// with ids changed, each Data checked against its receiver's credit, and both sessions' ends.
import {
  CloseCode,
  CONNECTOR_ROLE,
  type ConnectFrame,
  type DataFrame,
  type Frame,
  FrameType,
  hashConnectKey,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  type OpenFrame,
  PROTOCOL_VERSION,
  type ReadyFrame,
} from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { describe, expect, it } from "vitest";
import { CLIENT_IP, type MemoryAgent, type MemoryLink, MemoryRelay, NO_RULES, quietWarnings, tick } from "./_host.ts";

const KEY = "key-of-devbox-0123456789";
const text = (s: string) => new TextEncoder().encode(s);

/** A TCP tunnel's agent: its hello says `tcp` and gives the hashes of `keys`. */
async function tcpAgent(
  relay: MemoryRelay,
  name = "devbox",
  { keys = [KEY], allowIp = [] as string[] } = {},
): Promise<MemoryAgent> {
  const connectKeys = await Promise.all(keys.map((key) => hashConnectKey(name, key)));
  return relay.agent(name, { tcp: true, rules: { ...NO_RULES, allowIp, connectKeys } });
}

function connectFrame(name: string, fields: Partial<ConnectFrame> = {}): ConnectFrame {
  return { type: FrameType.Connect, version: PROTOCOL_VERSION, client: "core-test", name, key: KEY, resume: null, ...fields };
}

/** A visitor's `agent connect`: its link (role=connect), its first frame, and the relay's answer. */
async function connecting(
  relay: MemoryRelay,
  name: string,
  first: Frame = connectFrame(name),
  clientIp?: string,
): Promise<{ link: MemoryLink; answer: Frame }> {
  const link = await relay.connect(name, clientIp, `&role=${CONNECTOR_ROLE}`);
  await link.deliver(first);
  return { link, answer: await link.next() };
}

/** A connector the relay answered Ready. */
async function connector(relay: MemoryRelay, name = "devbox", fields: Partial<ConnectFrame> = {}) {
  const { link, answer } = await connecting(relay, name, connectFrame(name, fields));
  if (answer.type !== FrameType.Ready) throw new Error(`the core did not answer Ready: ${JSON.stringify(answer)}`);
  return { link, ready: answer as ReadyFrame };
}

function refusal(answer: Frame): { code: string; message: string } {
  if (answer.type !== FrameType.Refused) throw new Error(`expected Refused, got ${JSON.stringify(answer)}`);
  return answer;
}

/** The connector opens its stream `stream`; returns the Open the agent got (the relay's id). */
async function open(visitor: MemoryLink, agent: MemoryLink, stream: number): Promise<OpenFrame> {
  await visitor.deliver({ type: FrameType.Open, stream, from: "" });
  return agent.nextOf(FrameType.Open);
}

/** Sends `bytes` on `stream` in chunks of MAX_DATA_CHUNK. */
async function send(link: MemoryLink, stream: number, bytes: number): Promise<void> {
  for (let sent = 0; sent < bytes; sent += MAX_DATA_CHUNK) {
    await link.deliver({ type: FrameType.Data, stream, bytes: new Uint8Array(Math.min(MAX_DATA_CHUNK, bytes - sent)) });
  }
}

/** Bytes of Data on `stream` among the frames `link` got so far. */
function received(link: MemoryLink, stream: number): number {
  return link
    .frames()
    .filter((f): f is DataFrame => f.type === FrameType.Data && f.stream === stream)
    .reduce((sum, f) => sum + f.bytes.byteLength, 0);
}

describe("a TCP tunnel's agent", () => {
  it("is answered Ready with tcp: true, and a visitor with one of its keys gets in", async () => {
    const relay = new MemoryRelay();
    const { ready } = await tcpAgent(relay);
    expect(ready).toMatchObject({ name: "devbox", tcp: true });
    await connector(relay);
  });

  it("of an agent from before TCP tunnels (no tcp, three rule lists) is an HTTP tunnel as before", async () => {
    const relay = new MemoryRelay();
    const link = await relay.connect("web");
    const hello = [FrameType.Hello, PROTOCOL_VERSION, "old-agent", "web", "", "claim-of-web-0123456789", [[], [], []], null];
    await link.deliverBytes(encode(hello));
    expect(await link.next()).toMatchObject({ type: FrameType.Ready, name: "web", tcp: false });
    const response = relay.visit("web", "/page");
    const head = await link.nextOf(FrameType.RequestHead);
    await link.deliver(
      { type: FrameType.ResponseHead, stream: head.stream, status: 200, headers: [] },
      { type: FrameType.Data, stream: head.stream, bytes: text("as before") },
      { type: FrameType.End, stream: head.stream },
    );
    expect(await (await response).text()).toBe("as before");
    expect(refusal((await connecting(relay, "web")).answer).code).toBe("not-tcp");
  });

  it("with --basic-auth or --verify-webhook is refused: those rules check HTTP requests", async () => {
    const relay = new MemoryRelay();
    const basic = await relay.say("devbox", { tcp: true, rules: { ...NO_RULES, basicAuth: ["ab".repeat(32)] } });
    expect(refusal(basic.answer)).toMatchObject({ code: "bad-hello", message: expect.stringMatching(/--basic-auth/) });
    expect(basic.link.closed?.code).toBe(CloseCode.Refused);
    const webhook = await relay.say("devbox", {
      tcp: true,
      rules: { ...NO_RULES, webhooks: [{ kind: "github", header: "x-hub-signature-256", secret: "s" }] },
    });
    expect(refusal(webhook.answer).code).toBe("bad-hello");
    // The same rules on an HTTP tunnel are fine.
    await relay.agent("web", { rules: { ...NO_RULES, basicAuth: ["ab".repeat(32)] } });
  });

  it("answers an HTTP visit with 421 tcp-tunnel, naming the connect command", async () => {
    const relay = new MemoryRelay();
    const { link } = await tcpAgent(relay);
    const page = await relay.visit("devbox", "/");
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([421, "tcp-tunnel"]);
    expect(await page.text()).toContain("agent connect devbox --listen 127.0.0.1:PORT");
    expect(link.pending()).toEqual([]);
  });
});

describe("a visitor's connect", () => {
  it("is refused agent-offline when no agent serves the tunnel", async () => {
    const relay = new MemoryRelay();
    const { link, answer } = await connecting(relay, "devbox");
    expect(refusal(answer)).toMatchObject({ code: "agent-offline", message: expect.stringContaining('"devbox"') });
    expect(link.closed?.code).toBe(CloseCode.Refused);
    expect(link.closed?.reason).toMatch(/^agent-offline: /);
  });

  it("is refused not-tcp for an HTTP tunnel", async () => {
    const relay = new MemoryRelay();
    await relay.agent("web");
    expect(refusal((await connecting(relay, "web")).answer)).toMatchObject({
      code: "not-tcp",
      message: expect.stringMatching(/HTTP tunnel/),
    });
  });

  it("is refused forbidden from an address outside --allow-ip, and admitted from one inside", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay, "devbox", { allowIp: ["10.0.0.0/8"] });
    const outside = await connecting(relay, "devbox", connectFrame("devbox"), CLIENT_IP);
    expect(refusal(outside.answer)).toMatchObject({ code: "forbidden", message: expect.stringMatching(/--allow-ip/) });
    const inside = await connecting(relay, "devbox", connectFrame("devbox"), "10.1.2.3");
    expect(inside.answer.type).toBe(FrameType.Ready);
    expect(agent.pending()).toEqual([]);
  });

  it("is refused unauthorized for a wrong key and a missing one, and by a tunnel that gives no keys", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay, "devbox", { keys: [KEY, "second-key-0123456789"] });
    const wrong = await connecting(relay, "devbox", connectFrame("devbox", { key: "not-the-key-0123456789" }));
    expect(refusal(wrong.answer)).toEqual({
      type: FrameType.Refused,
      code: "unauthorized",
      message: "the key is not one of this tunnel's",
    });
    expect(wrong.link.closed?.code).toBe(CloseCode.Refused);
    const missing = await connecting(relay, "devbox", connectFrame("devbox", { key: "" }));
    expect(refusal(missing.answer)).toMatchObject({ code: "unauthorized", message: "this tunnel asks for a key" });
    // A hash is of the name and the key: another tunnel's hash of the same key lets no one in here.
    const elsewhere = new MemoryRelay();
    await elsewhere.agent("devbox", { tcp: true, rules: { ...NO_RULES, connectKeys: [await hashConnectKey("other", KEY)] } });
    expect(refusal((await connecting(elsewhere, "devbox")).answer).code).toBe("unauthorized");
    // Either of the tunnel's keys is let in.
    await connector(relay, "devbox", { key: "second-key-0123456789" });
    expect(agent.pending()).toEqual([]);
    const none = new MemoryRelay();
    await tcpAgent(none, "devbox", { keys: [] });
    expect(refusal((await connecting(none, "devbox")).answer)).toMatchObject({
      code: "unauthorized",
      message: expect.stringMatching(/gives no keys/),
    });
  });

  it("is refused version-mismatch, saying which side to upgrade", async () => {
    const relay = new MemoryRelay();
    await tcpAgent(relay);
    const older = await connecting(relay, "devbox", connectFrame("devbox", { version: PROTOCOL_VERSION - 1 }));
    expect(refusal(older.answer)).toMatchObject({
      code: "version-mismatch",
      message: expect.stringMatching(/upgrade the agent that runs connect$/),
    });
    const newer = await connecting(relay, "devbox", connectFrame("devbox", { version: PROTOCOL_VERSION + 1 }));
    expect(refusal(newer.answer).message).toMatch(/upgrade the relay$/);
  });

  it("is refused bad-hello for a first frame that is not a Connect, and for another name than the URL's", async () => {
    const relay = new MemoryRelay();
    await tcpAgent(relay);
    await tcpAgent(relay, "other");
    const hello = await connecting(relay, "devbox", { type: FrameType.Ack, received: 0 });
    expect(refusal(hello.answer)).toMatchObject({ code: "bad-hello", message: expect.stringMatching(/must be a Connect/) });
    expect(hello.link.closed?.code).toBe(CloseCode.Refused);
    const other = await connecting(relay, "devbox", connectFrame("other"));
    expect(refusal(other.answer)).toMatchObject({
      code: "bad-hello",
      message: expect.stringContaining('the connection was opened for "devbox"'),
    });
  });

  it("is answered Ready with tcp: true and a session of its own", async () => {
    const relay = new MemoryRelay();
    const agent = await tcpAgent(relay);
    const { ready } = await connector(relay);
    expect(ready).toMatchObject({ name: "devbox", open: false, resumed: false, received: 0, tcp: true });
    expect(ready.session).not.toBe(agent.ready.session);
    expect(agent.link.pending()).toEqual([]);
  });
});

describe("a TCP stream", () => {
  it("opens at the agent with the relay's own stream id and the visitor's address", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const first = await connector(relay);
    const second = await connector(relay);
    // Both visitors call their stream 1: the agent gets two streams.
    const a = await open(first.link, agent, 1);
    const b = await open(second.link, agent, 1);
    expect(a).toEqual({ type: FrameType.Open, stream: expect.any(Number), from: CLIENT_IP });
    expect(b.from).toBe(CLIENT_IP);
    expect(b.stream).not.toBe(a.stream);
    await first.link.deliver({ type: FrameType.Data, stream: 1, bytes: text("from the first") });
    await second.link.deliver({ type: FrameType.Data, stream: 1, bytes: text("from the second") });
    expect(await agent.nextOf(FrameType.Data)).toEqual({ type: FrameType.Data, stream: a.stream, bytes: text("from the first") });
    expect(await agent.nextOf(FrameType.Data)).toEqual({
      type: FrameType.Data,
      stream: b.stream,
      bytes: text("from the second"),
    });
  });

  it("carries Data, Credit and End both ways with the ids changed, and is gone once both ways ended", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 41);
    expect(stream).not.toBe(41);
    await visitor.deliver({ type: FrameType.Data, stream: 41, bytes: text("SSH-2.0-client") });
    expect(await agent.next()).toEqual({ type: FrameType.Data, stream, bytes: text("SSH-2.0-client") });
    await agent.deliver({ type: FrameType.Data, stream, bytes: text("SSH-2.0-server") });
    expect(await visitor.next()).toEqual({ type: FrameType.Data, stream: 41, bytes: text("SSH-2.0-server") });
    await agent.deliver({ type: FrameType.Credit, stream, bytes: 14 });
    expect(await visitor.next()).toEqual({ type: FrameType.Credit, stream: 41, bytes: 14 });
    await visitor.deliver({ type: FrameType.Credit, stream: 41, bytes: 14 });
    expect(await agent.next()).toEqual({ type: FrameType.Credit, stream, bytes: 14 });
    // Half-close: the visitor's End, then the agent still sends.
    await visitor.deliver({ type: FrameType.End, stream: 41 });
    expect(await agent.next()).toEqual({ type: FrameType.End, stream });
    await agent.deliver({ type: FrameType.Data, stream, bytes: text("after your EOF") });
    expect(await visitor.next()).toEqual({ type: FrameType.Data, stream: 41, bytes: text("after your EOF") });
    await agent.deliver({ type: FrameType.End, stream });
    expect(await visitor.next()).toEqual({ type: FrameType.End, stream: 41 });
    // Both ways ended: the stream is gone on both sides.
    await visitor.deliver({ type: FrameType.Data, stream: 41, bytes: text("late") });
    expect(await visitor.next()).toMatchObject({ type: FrameType.Reset, stream: 41, code: "cancelled" });
    await agent.deliver({ type: FrameType.Data, stream, bytes: text("late") });
    expect(await agent.next()).toMatchObject({ type: FrameType.Reset, stream, code: "cancelled" });
    expect(received(agent, stream)).toBe("SSH-2.0-client".length);
    expect(received(visitor, 41)).toBe("SSH-2.0-server".length + "after your EOF".length);
  });

  it("is reset both ways by a Reset from either side, and forgotten", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const one = await open(visitor, agent, 1);
    await visitor.deliver({ type: FrameType.Reset, stream: 1, code: "cancelled", message: "ssh quit" });
    expect(await agent.next()).toEqual({ type: FrameType.Reset, stream: one.stream, code: "cancelled", message: "ssh quit" });
    await agent.deliver({ type: FrameType.Data, stream: one.stream, bytes: text("late") });
    expect(await agent.next()).toMatchObject({ type: FrameType.Reset, stream: one.stream, code: "cancelled" });
    const two = await open(visitor, agent, 2);
    await agent.deliver({ type: FrameType.Reset, stream: two.stream, code: "origin-unreachable", message: "nothing on :22" });
    expect(await visitor.next()).toEqual({
      type: FrameType.Reset,
      stream: 2,
      code: "origin-unreachable",
      message: "nothing on :22",
    });
    await visitor.deliver({ type: FrameType.Data, stream: 2, bytes: text("late") });
    expect(await visitor.next()).toMatchObject({ type: FrameType.Reset, stream: 2, code: "cancelled" });
    expect(received(agent, two.stream)).toBe(0);
  });

  it("is reset both ways (protocol-error) when the visitor sends past the agent's credit, and nothing of it reaches the agent", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 1);
    const other = await open(visitor, agent, 2);
    await send(visitor, 1, INITIAL_WINDOW);
    await visitor.deliver({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(1) });
    const expected = {
      type: FrameType.Reset,
      code: "protocol-error",
      message: expect.stringMatching(/past the receiver's credit/),
    };
    expect(await agent.nextOf(FrameType.Reset)).toMatchObject({ ...expected, stream });
    expect(await visitor.nextOf(FrameType.Reset)).toMatchObject({ ...expected, stream: 1 });
    expect(received(agent, stream)).toBe(INITIAL_WINDOW);
    // The other stream goes on.
    await visitor.deliver({ type: FrameType.Data, stream: 2, bytes: text("fine") });
    expect(await agent.nextOf(FrameType.Data)).toEqual({ type: FrameType.Data, stream: other.stream, bytes: text("fine") });
    expect([visitor.closed, agent.closed]).toEqual([undefined, undefined]);
  });

  it("is reset both ways (protocol-error) when the agent sends past the visitor's credit, and nothing of it reaches the visitor", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 7);
    await send(agent, stream, INITIAL_WINDOW);
    // A grant back to the agent lets it send more; a grant of the visitor's own window does not.
    await agent.deliver({ type: FrameType.Data, stream, bytes: new Uint8Array(1) });
    const expected = {
      type: FrameType.Reset,
      code: "protocol-error",
      message: expect.stringMatching(/past the receiver's credit/),
    };
    expect(await visitor.nextOf(FrameType.Reset)).toMatchObject({ ...expected, stream: 7 });
    expect(await agent.nextOf(FrameType.Reset)).toMatchObject({ ...expected, stream });
    expect(received(visitor, 7)).toBe(INITIAL_WINDOW);
    expect(warnings).toEqual([
      expect.stringMatching(/^tunnel devbox: stream \d+: the agent broke the protocol: 1 bytes sent past the receiver's credit/),
    ]);
  });

  it.each([
    ["Data after End", [{ type: FrameType.End }, { type: FrameType.Data, bytes: text("more") }], /Data after End/],
    ["a second End", [{ type: FrameType.End }, { type: FrameType.End }], /a second End/],
    ["a Credit past the window", [{ type: FrameType.Credit, bytes: INITIAL_WINDOW }], /window/],
  ])("is reset both ways (protocol-error) for %s from the visitor, which the agent never gets", async (_, frames, why) => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 5);
    await visitor.deliver(...frames.map((frame) => ({ ...frame, stream: 5 }) as Frame));
    const kinds = frames.map((f) => f.type);
    // What was fine before the fault passed.
    for (const type of kinds.slice(0, -1)) expect((await agent.next()).type).toBe(type);
    expect(await agent.next()).toMatchObject({ type: FrameType.Reset, stream, code: "protocol-error", message: why });
    expect(await visitor.next()).toMatchObject({ type: FrameType.Reset, stream: 5, code: "protocol-error", message: why });
    expect(received(agent, stream)).toBe(0);
  });

  it("goes on past the first window once the receiver grants credit", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 1);
    await send(visitor, 1, INITIAL_WINDOW);
    await agent.deliver({ type: FrameType.Credit, stream, bytes: MAX_DATA_CHUNK });
    await send(visitor, 1, MAX_DATA_CHUNK);
    await tick();
    expect(received(agent, stream)).toBe(INITIAL_WINDOW + MAX_DATA_CHUNK);
    expect(agent.frames().filter((f) => f.type === FrameType.Reset)).toEqual([]);
  });

  it("is refused with Reset too-many-streams past MAX_STREAMS_PER_TUNNEL; a stream that ends makes room", async () => {
    const relay = new MemoryRelay({ MAX_STREAMS_PER_TUNNEL: "2" });
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const first = await open(visitor, agent, 1);
    await open(visitor, agent, 2);
    await visitor.deliver({ type: FrameType.Open, stream: 3, from: "" });
    expect(await visitor.next()).toMatchObject({
      type: FrameType.Reset,
      stream: 3,
      code: "too-many-streams",
      message: expect.stringMatching(/MAX_STREAMS_PER_TUNNEL/),
    });
    expect(agent.pending()).toEqual([]);
    await visitor.deliver({ type: FrameType.Reset, stream: 1, code: "cancelled", message: "" });
    expect(await agent.next()).toMatchObject({ type: FrameType.Reset, stream: first.stream });
    await open(visitor, agent, 3);
  });

  it("of a visitor that does not come back within RESUME_SECONDS is reset at the agent; one that comes back goes on", async () => {
    const relay = new MemoryRelay({ RESUME_SECONDS: "0.2" });
    const { link: agent } = await tcpAgent(relay, "devbox", { keys: [KEY, "second-key-0123456789"] });
    const back = await connector(relay);
    const kept = await open(back.link, agent, 1);
    back.link.cut(1006);
    // Only the key that opened a session resumes it.
    const stranger = await connector(relay, "devbox", {
      key: "second-key-0123456789",
      resume: { session: back.ready.session, received: 0 },
    });
    expect(stranger.ready.resumed).toBe(false);
    const resumed = await connector(relay, "devbox", { resume: { session: back.ready.session, received: 0 } });
    expect(resumed.ready).toMatchObject({ session: back.ready.session, resumed: true });
    await resumed.link.deliver({ type: FrameType.Data, stream: 1, bytes: text("still here") });
    expect(await agent.next()).toEqual({ type: FrameType.Data, stream: kept.stream, bytes: text("still here") });

    const gone = await connector(relay);
    const lost = await open(gone.link, agent, 1);
    const cutAt = Date.now();
    gone.link.cut(1006);
    expect(await agent.next(10_000)).toMatchObject({
      type: FrameType.Reset,
      stream: lost.stream,
      code: "cancelled",
      message: expect.stringMatching(/the visitor did not come back within 0.2s/),
    });
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(190);
    // Too late to resume: a new session, without the stream.
    const late = await connector(relay, "devbox", { resume: { session: gone.ready.session, received: 0 } });
    expect(late.ready.resumed).toBe(false);
    await late.link.deliver({ type: FrameType.Data, stream: 1, bytes: text("late") });
    expect(await late.link.next()).toMatchObject({ type: FrameType.Reset, stream: 1, code: "cancelled" });
  });

  it("of a visitor that closes cleanly (1000) is reset at the agent at once", async () => {
    const relay = new MemoryRelay();
    const { link: agent } = await tcpAgent(relay);
    const { link: visitor } = await connector(relay);
    const { stream } = await open(visitor, agent, 1);
    visitor.cut(CloseCode.Normal, "done");
    // At once: RESUME_SECONDS is 30 here.
    expect(await agent.next(5000)).toMatchObject({
      type: FrameType.Reset,
      stream,
      code: "cancelled",
      message: expect.stringMatching(/the visitor disconnected/),
    });
  });

  it("ends with the agent's session: its connectors are closed 1012 and must connect again", async () => {
    const relay = new MemoryRelay();
    const agent = await tcpAgent(relay);
    const { link: visitor, ready } = await connector(relay);
    await open(visitor, agent.link, 1);
    agent.link.cut(CloseCode.Normal, "stopped");
    expect(await visitor.whenClosed()).toEqual({ code: 1012, reason: expect.stringMatching(/agent/) });
    await relay.settled();
    // Back under a new session: the old connector's session is gone with its streams.
    const next = await tcpAgent(relay);
    const again = await connector(relay, "devbox", { resume: { session: ready.session, received: 0 } });
    expect(again.ready.resumed).toBe(false);
    await again.link.deliver({ type: FrameType.Data, stream: 1, bytes: text("late") });
    expect(await again.link.next()).toMatchObject({ type: FrameType.Reset, stream: 1, code: "cancelled" });
    expect(next.link.pending()).toEqual([]);
  });
});
