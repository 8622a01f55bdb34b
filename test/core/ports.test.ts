// A TCP tunnel's public port, as a self-hosted relay with --tcp-ports gives one: when the core
// opens, closes and releases it (its agent's hello, a cut it comes back from or not, a new
// session, a clean stop, the name's lapse), what the Ready says, and which connections become
// streams. The ports are in memory (MemoryPorts); test/e2e/relay-selfhosted-tcp.test.ts has
// real ones, with ssh and redis through them.
import { EventEmitter } from "node:events";
import { CONNECT_PATH, FrameType } from "@burrow/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { PublicSocket } from "../../edge/src/core/host.ts";
import { helloFrame, MemoryPorts, MemoryRelay, NO_RULES, tick } from "./_host.ts";

const DAY = 86_400_000;

afterEach(() => {
  vi.useRealTimers();
});

/** A client's connection to the port as node:net hands it over: paused, its writes kept. */
class MemorySocket extends EventEmitter {
  readonly written: Uint8Array[] = [];
  destroyed = false;
  paused = true;

  write(bytes: Uint8Array, written: (error?: Error | null) => void): boolean {
    this.written.push(bytes);
    written();
    return true;
  }

  end(): void {}

  destroy(): void {
    this.destroyed = true;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  /** As the core takes it (EventEmitter's `on` is typed for any listener; node:net's Socket is one too). */
  get public(): PublicSocket {
    return this as unknown as PublicSocket;
  }
}

function withPorts(vars: Record<string, string> = {}, ports = new MemoryPorts()): { relay: MemoryRelay; ports: MemoryPorts } {
  const relay = new MemoryRelay(vars);
  relay.ports = ports;
  return { relay, ports };
}

describe("a TCP tunnel's public port", () => {
  it("opens at a TCP agent's hello, whose Ready says tcp://HOST:PORT; an HTTP tunnel gets none", async () => {
    const { relay, ports } = withPorts();
    expect((await relay.agent("devbox", { tcp: true, publicPort: true })).ready).toMatchObject({
      url: "tcp://relay.test:20000",
      tcp: true,
      notice: "",
    });
    expect((await relay.agent("web")).ready).toMatchObject({ url: "http://relay.test/t/web/", notice: "" });
    expect((await relay.agent("db", { tcp: true, publicPort: true })).ready.url).toBe("tcp://relay.test:20001");
    expect(ports.events).toEqual(["open devbox 20000", "open db 20001"]);
  });

  it("opens only when the tunnel's owner asks (--public-port): a TCP tunnel is private by default", async () => {
    const { relay, ports } = withPorts();
    expect((await relay.agent("devbox", { tcp: true })).ready).toMatchObject({ url: "http://relay.test/t/devbox/", tcp: true });
    expect(ports.events).toEqual([]);
    // On a relay without ports, asking gets the tunnel up for connect only, with why.
    const plain = new MemoryRelay();
    const { ready } = await plain.agent("devbox", { tcp: true, publicPort: true });
    expect(ready.url).toBe("http://relay.test/t/devbox/");
    expect(ready.notice).toMatch(/no public TCP ports .*agent connect/);
  });

  it("is on the relay's own DOMAIN for a tunnel at <name>.DOMAIN", async () => {
    const { relay } = withPorts({ BASE_DOMAIN: "tunnels.example" });
    const response = await relay.fetch(`http://tunnels.example${CONNECT_PATH}?name=devbox`, {
      headers: { upgrade: "websocket" },
    });
    const link = relay.object("devbox").link(response);
    await link.deliver(helloFrame("devbox", { tcp: true, publicPort: true }));
    expect(await link.next()).toMatchObject({ type: FrameType.Ready, url: "tcp://tunnels.example:20000" });
  });

  it("says in the Ready when no port is free: the tunnel is up, for connect only", async () => {
    const { relay, ports } = withPorts({}, new MemoryPorts(20_000, 20_000));
    await relay.agent("first", { tcp: true, publicPort: true });
    expect((await relay.agent("second", { tcp: true, publicPort: true })).ready).toMatchObject({
      url: "http://relay.test/t/second/",
      tcp: true,
      notice: "no port of the relay's --tcp-ports 20000-20000 is free: visitors reach this tunnel with `agent connect` only",
    });
    expect(ports.events).toEqual(["open first 20000", "none second"]);
  });

  it("stays open while a cut agent may come back, and closes once it has not (RESUME_SECONDS)", async () => {
    const { relay, ports } = withPorts({ RESUME_SECONDS: "0.1" });
    const agent = await relay.agent("devbox", { tcp: true, publicPort: true });
    agent.link.cut(1006);
    await relay.settled();
    expect(ports.events).toEqual(["open devbox 20000"]);
    await tick(150);
    expect(ports.events).toEqual(["open devbox 20000", "close devbox"]);
    // The name is still its agent's (a claim's grace): its port too.
    expect(ports.held.get("devbox")).toBe(20_000);
  });

  it("keeps listening for the agent's new session, and closes when the name's agent serves HTTP instead", async () => {
    const { relay, ports } = withPorts();
    const first = await relay.agent("devbox", { tcp: true, publicPort: true });
    first.link.cut(1006);
    const second = await relay.agent("devbox", { tcp: true, publicPort: true });
    expect(second.ready).toMatchObject({ resumed: false, url: "tcp://relay.test:20000" });
    expect(ports.events).toEqual(["open devbox 20000"]);
    second.link.cut(1006);
    expect((await relay.agent("devbox")).ready.url).toBe("http://relay.test/t/devbox/");
    expect(ports.events).toEqual(["open devbox 20000", "close devbox"]);
  });

  it("closes at a clean stop; an open relay frees the name and its port at once", async () => {
    const { relay, ports } = withPorts();
    const agent = await relay.agent("devbox", { tcp: true, publicPort: true });
    agent.link.cut(1000);
    await relay.settled();
    expect(ports.events).toEqual(["open devbox 20000", "close devbox", "release devbox"]);
  });

  it("stays the name's after a clean stop while a token keeps the name, and is released when the name lapses (NAME_TTL_DAYS)", async () => {
    const { relay, ports } = withPorts({ BURROW_TOKENS: "alice:alice-token-0001", NAME_TTL_DAYS: "2" });
    const agent = await relay.agent("devbox", { tcp: true, publicPort: true, token: "alice-token-0001" });
    agent.link.cut(1000);
    await relay.settled();
    expect(ports.events).toEqual(["open devbox 20000", "close devbox"]);
    const lastUsed = (await relay.object("devbox").storage.get<{ lastUsed: number }>("name"))!.lastUsed;
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(lastUsed + 2 * DAY);
    await relay.object("devbox").fireAlarm();
    expect(ports.events).toEqual(["open devbox 20000", "close devbox", "release devbox"]);
  });

  it("closes a connection --allow-ip leaves out, unread, and makes one it admits a stream to the agent", async () => {
    const { relay } = withPorts();
    const agent = await relay.agent("devbox", {
      tcp: true,
      publicPort: true,
      rules: { ...NO_RULES, allowIp: ["198.51.100.0/24"] },
    });
    const core = relay.object("devbox").core;
    const stranger = new MemorySocket();
    await core.acceptTcp(stranger.public, "203.0.113.9");
    expect(stranger).toMatchObject({ destroyed: true, paused: true });
    const admitted = new MemorySocket();
    await core.acceptTcp(admitted.public, "198.51.100.7");
    expect(admitted).toMatchObject({ destroyed: false, paused: false });
    // The agent hears of the admitted one only.
    expect(await agent.link.nextOf(FrameType.Open)).toMatchObject({ from: "198.51.100.7" });
    await tick(10);
    expect(agent.link.pending().filter((frame) => frame.type === FrameType.Open)).toEqual([]);
  });

  it("hands a connection made while the agent is away to it once it resumes", async () => {
    const { relay } = withPorts({ RESUME_SECONDS: "5" });
    const first = await relay.agent("devbox", { tcp: true, publicPort: true });
    first.link.cut(1006);
    const socket = new MemorySocket();
    await relay.object("devbox").core.acceptTcp(socket.public, "198.51.100.7");
    expect(socket.destroyed).toBe(false);
    const back = await relay.agent("devbox", {
      tcp: true,
      publicPort: true,
      resume: { session: first.ready.session, received: 0 },
    });
    expect(back.ready).toMatchObject({ resumed: true, url: "tcp://relay.test:20000" });
    expect(await back.link.nextOf(FrameType.Open)).toMatchObject({ from: "198.51.100.7" });
  });

  it("closes a connection to an HTTP tunnel's object, or one with no agent", async () => {
    const { relay } = withPorts();
    await relay.agent("web");
    const socket = new MemorySocket();
    await relay.object("web").core.acceptTcp(socket.public, "198.51.100.7");
    expect(socket.destroyed).toBe(true);
    const nobody = new MemorySocket();
    await relay.object("gone").core.acceptTcp(nobody.public, "198.51.100.7");
    expect(nobody.destroyed).toBe(true);
  });
});
