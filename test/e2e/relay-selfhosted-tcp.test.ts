// The self-hosted relay's public TCP ports (`agent relay --tcp-ports A-B`): plain ssh and
// redis-benchmark to a TCP tunnel's port on the relay's host, with no `agent connect`; the
// tunnel's --allow-ip and the per-address share; the same port for a name after a restart
// with --data; a port per tunnel, closed when its agent stops; and the start errors. The relay
// on Node, Bun and Deno, each a real process; real sshd and redis-server behind Node agents.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Child } from "../_process.ts";
import { Relay, relayCommand } from "../_relay.ts";
import { type RedisServer, redisBenchmark, type Sshd, skipServices, sshRun, startRedis, startSshd } from "../_services.ts";

const RUNTIMES = ["node", "bun", "deno"] as const;
const skip = skipServices("the self-hosted relay's public TCP ports");
const keys = mkdtempSync(join(tmpdir(), "burrow-tcp-ports-"));
const keyFile = join(keys, "connect-keys");
writeFileSync(keyFile, "a-connect-key-of-the-tests-own\n");
afterAll(() => rmSync(keys, { recursive: true, force: true }));

/** `size` consecutive ports below Linux's ephemeral range (32768+) that nothing listens on now. */
async function freeRange(size: number): Promise<{ first: number; last: number; flag: string }> {
  for (;;) {
    const first = 20_000 + Math.floor(Math.random() * (12_000 - size));
    const ports = Array.from({ length: size }, (_, i) => first + i);
    if ((await Promise.all(ports.map(isFree))).every(Boolean))
      return { first, last: first + size - 1, flag: `${first}-${first + size - 1}` };
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A listener of the test's own on `port`: "another program" holding a port of the range. */
function occupy(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => socket.destroy());
    server.once("error", reject).listen(port, "127.0.0.1", () => resolve(server));
  });
}

/** The port of a `tcp://HOST:PORT` tunnel URL. */
function portOf(url: string): number {
  const match = /^tcp:\/\/localhost:(\d+)$/.exec(url);
  if (!match) throw new Error(`${url} is not a public TCP port on localhost`);
  return Number(match[1]);
}

/** A Redis client's connection: `ping()` answers "+PONG", or "closed" once the relay closed it. */
interface RedisClient {
  ping(): Promise<string>;
  /** Half-closes and resolves once the other end has closed too. */
  quit(): Promise<void>;
  close(): void;
}

async function redisClient(port: number): Promise<RedisClient> {
  const socket = net.connect(port, "127.0.0.1");
  let received = "";
  let closed = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const waiter of waiters) waiter();
  };
  socket.on("data", (bytes) => {
    received += bytes.toString("latin1");
    wake();
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    closed = true;
    wake();
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return {
    ping() {
      socket.write("PING\r\n");
      return new Promise((resolve) => {
        const check = () => {
          const at = received.indexOf("+PONG\r\n");
          if (at >= 0) {
            received = received.slice(at + 7);
            waiters.delete(check);
            resolve("+PONG");
          } else if (closed) {
            waiters.delete(check);
            resolve(received ? `closed after ${JSON.stringify(received)}` : "closed");
          }
        };
        waiters.add(check);
        check();
      });
    },
    quit() {
      socket.end();
      return new Promise((resolve) => {
        const check = () => {
          if (!closed) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    close: () => socket.destroy(),
  };
}

/** Connecting to 127.0.0.1:`port`: "refused" when nothing listens there, else "connected". */
function dial(port: number): Promise<"refused" | "connected"> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (error: NodeJS.ErrnoException) => (error.code === "ECONNREFUSED" ? resolve("refused") : reject(error)));
  });
}

let sshd: Sshd;
let redis: RedisServer;

beforeAll(async () => {
  if (skip) return;
  [sshd, redis] = await Promise.all([startSshd(), startRedis()]);
}, 60_000);

afterAll(async () => {
  await Promise.all([sshd?.stop(), redis?.stop()]);
});

describe.skipIf(skip).each(RUNTIMES)("public TCP ports of the self-hosted relay on %s", (runtime) => {
  let relay: Relay;
  let range: { first: number; last: number; flag: string };
  const agents: AgentProcess[] = [];
  let counter = 0;

  /** A TCP tunnel's agent (Node) for `target`, with a fresh name unless `name` is given. */
  const tunnel = async (target: number, more: string[] = [], name = `p${runtime}${++counter}x${process.pid}`) => {
    const agent = await AgentProcess.start("node", [
      ...["--tcp", String(target), "--public-port", "--relay", relay.url, "--name", name],
      ...["--connect-key-file", keyFile, "--inspect", "false", ...more],
    ]);
    agents.push(agent);
    return { agent, name, port: portOf(agent.url) };
  };

  beforeAll(async () => {
    range = await freeRange(6);
    relay = await Relay.start({ launcher: `selfhost-${runtime}`, args: ["--tcp-ports", range.flag] });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await relay?.dispose();
  });

  it("says at start which ports it hands out, and that no key guards them", async () => {
    await relay.waitFor(
      new RegExp(`^relay \\| public TCP ports ${range.flag} on 127\\.0\\.0\\.1: .*with no key by anyone its --allow-ip admits`),
    );
  });

  it("lets plain ssh -p PORT reach the agent's sshd, with no connect: a command, and 4 MB in with EOF", async () => {
    const { agent, name, port } = await tunnel(sshd.port);
    expect(port).toBeGreaterThanOrEqual(range.first);
    expect(port).toBeLessThanOrEqual(range.last);
    // The lines after the tunnel's: where plain clients go, and that every address may.
    await agent.waitFor(
      new RegExp(`^tunnel ${name}: plain clients reach it at localhost port ${port}, .*ssh -p ${port} localhost`),
    );
    await agent.waitFor(new RegExp(`^warning: tunnel ${name}: localhost:${port} is open to every address`));
    const ssh = (command: string, input?: Uint8Array) =>
      sshRun("ssh", [...sshd.sshOptions, "-p", String(port), `${sshd.user}@localhost`, command], { input, timeoutMs: 60_000 });
    const hello = await ssh("echo hello from $(whoami)");
    expect(hello.stderr).toBe("");
    expect(hello.stdout).toBe(`hello from ${sshd.user}\n`);
    // stdin's EOF crosses as a half-close (End): sha256sum answers only once it has it.
    const bytes = randomBytes(4 * 1024 * 1024);
    const sum = await ssh("sha256sum", bytes);
    expect(sum.code).toBe(0);
    expect(sum.stdout.split(" ")[0]).toBe(createHash("sha256").update(bytes).digest("hex"));
    await agent.stop();
  });

  it("answers redis-benchmark at 50 clients on the public port, every request", async () => {
    const { agent, port } = await tunnel(redis.port);
    const result = await redisBenchmark({ port, clients: 50, requests: 20_000, timeoutMs: 120_000 });
    expect(result.errors, result.output).toBe(0);
    expect(result.opsPerSecond.GET).toBeGreaterThan(0);
    expect(result.opsPerSecond.SET).toBeGreaterThan(0);
    await agent.stop();
  });

  it("closes a connection from an address --allow-ip leaves out, and nothing reaches the agent", async () => {
    const { agent, name, port } = await tunnel(redis.port, ["--allow-ip", "192.0.2.0/24"]);
    await agent.waitFor(new RegExp(`^tunnel ${name}: localhost:${port} admits 192\\.0\\.2\\.0/24 only \\(--allow-ip\\)`));
    const client = await redisClient(port);
    expect(await client.ping()).toBe("closed");
    // A stream would have made the agent dial redis and log it; it heard of none.
    expect(agent.output).not.toMatch(/tcp from /);
    // The same tunnel admits the address once its rule does (a new agent, a new rule).
    await agent.stop();
    const allowed = await tunnel(redis.port, ["--allow-ip", "127.0.0.1"], name);
    const again = await redisClient(allowed.port);
    expect(await again.ping()).toBe("+PONG");
    again.close();
    await allowed.agent.stop();
  });

  it("gives two TCP tunnels two ports, each to its own agent", async () => {
    const [a, b] = await Promise.all([tunnel(redis.port), tunnel(sshd.port)]);
    expect(a.port).not.toBe(b.port);
    const client = await redisClient(a.port);
    expect(await client.ping()).toBe("+PONG");
    client.close();
    const banner = await sshRun("ssh", [...sshd.sshOptions, "-p", String(b.port), `${sshd.user}@localhost`, "echo b"]);
    expect(banner.stdout).toBe("b\n");
    await Promise.all([a.agent.stop(), b.agent.stop()]);
  });

  it("keeps a name's port across a restart with --data, while the name is kept", async () => {
    // b first: the lower port. Killed (its name kept, as after a crash), it is away when the
    // relay comes back; a relay that forgot the ports would give a the lowest free one, b's.
    const b = await tunnel(redis.port);
    const a = await tunnel(redis.port);
    expect(b.port).toBeLessThan(a.port);
    expect(JSON.parse(readFileSync(join(relay.dataDir, "ports.json"), "utf8")).values).toMatchObject({
      [a.name]: a.port,
      [b.name]: b.port,
    });
    await b.agent.stop("SIGKILL");
    const from = a.agent.lines.length;
    await relay.restart();
    expect(portOf(await a.agent.ready(from))).toBe(a.port);
    const back = await tunnel(redis.port, [], b.name);
    expect(back.port).toBe(b.port);
    for (const port of [a.port, b.port]) {
      const client = await redisClient(port);
      expect(await client.ping()).toBe("+PONG");
      client.close();
    }
    await Promise.all([a.agent.stop(), back.agent.stop()]);
  });

  it("closes the port once its agent stops cleanly, and opens it when an agent comes back", async () => {
    const { agent, name, port } = await tunnel(redis.port);
    const from = relay.lineCount;
    await agent.stop();
    await relay.waitFor(new RegExp(`^relay \\| tunnel ${name}: public TCP port ${port} closed \\(its agent left\\)`), { from });
    expect(await dial(port)).toBe("refused");
    const back = await tunnel(redis.port, [], name);
    const client = await redisClient(back.port);
    expect(await client.ping()).toBe("+PONG");
    client.close();
    await back.agent.stop();
  });
});

describe.skipIf(skip)("public TCP ports at their limits", () => {
  let relay: Relay;
  let range: { first: number; last: number; flag: string };
  let taken: net.Server;
  const agents: AgentProcess[] = [];
  const tunnel = async (name: string, more: string[] = []) => {
    const agent = await AgentProcess.start("node", [
      ...["--tcp", String(redis.port), "--public-port", "--relay", relay.url, "--name", `${name}x${process.pid}`],
      ...["--connect-key-file", keyFile, "--inspect", "false", ...more],
    ]);
    agents.push(agent);
    return agent;
  };

  beforeAll(async () => {
    range = await freeRange(2);
    taken = await occupy(range.first);
    relay = await Relay.start({
      launcher: "selfhost-node",
      args: ["--tcp-ports", range.flag],
      vars: { MAX_STREAMS_PER_VISITOR: "2" },
    });
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await relay?.dispose();
    taken?.close();
  });

  it("skips a port another program holds, and says when none is free: the tunnel is up, for connect only", async () => {
    const first = await tunnel("first");
    expect(portOf(first.url)).toBe(range.last);
    const second = await tunnel("second");
    expect(second.url).toMatch(/^http:\/\//);
    await second.waitFor(
      new RegExp(
        `^warning: tunnel secondx\\d+: no port of the relay's --tcp-ports ${range.flag} is free .*: visitors reach this tunnel with \`agent connect\` only$`,
      ),
    );
    expect(relay.output).toMatch(/^relay \| tunnel secondx\d+: no port of the relay's --tcp-ports/m);
    await second.stop();
  });

  it("closes a connection past the address's share (MAX_STREAMS_PER_VISITOR), and logs why", async () => {
    const port = range.last;
    const held = [await redisClient(port), await redisClient(port)];
    for (const client of held) expect(await client.ping()).toBe("+PONG");
    const third = await redisClient(port);
    expect(await third.ping()).toBe("closed");
    await relay.waitFor(
      /^tunnel firstx\d+: a connection to its public TCP port from 127\.0\.0\.1 closed: .*MAX_STREAMS_PER_VISITOR/,
    );
    // A share given back is taken again. The relay closes its end once the stream is over
    // both ways, and forgets the stream then: the next connection finds the share free.
    await held.pop()!.quit();
    const next = await redisClient(port);
    expect(await next.ping()).toBe("+PONG");
    for (const client of [...held, next]) client.close();
  });

  it("gives no port on a relay without --tcp-ports: the tunnel is up for connect only", async () => {
    const plain = await Relay.start({ launcher: "selfhost-node" });
    try {
      const agent = new AgentProcess("node", [
        ...["--tcp", String(redis.port), "--relay", plain.url, "--name", `plain${process.pid}`],
        ...["--connect-key-file", keyFile, "--inspect", "false"],
      ]);
      agents.push(agent);
      expect(await agent.ready()).toMatch(/^http:\/\//);
      expect(plain.output).not.toMatch(/public TCP port/);
    } finally {
      await plain.dispose();
    }
  });
});

describe.each(RUNTIMES)("agent relay on %s refuses a bad --tcp-ports, with a hint", (runtime) => {
  async function run(args: string[]): Promise<{ status: number | null; output: string }> {
    const [command, argv] = relayCommand(runtime, ["--port", "0", "--host", "127.0.0.1", ...args]);
    const child = new Child(`relay:${runtime}`, command, argv, { env: process.env });
    const timer = setTimeout(() => child.signalGroup("SIGKILL"), 20_000);
    const status = await child.exited;
    clearTimeout(timer);
    return { status, output: child.output };
  }

  it.each([
    [["--tcp-ports", "20000-"], /--tcp-ports 20000- is not a range of ports/, /hint: .*--tcp-ports 20000-20099/],
    [["--tcp-ports", "1-70000"], /--tcp-ports 1-70000 is not a range of ports/, /from 1 to 65535/],
    [
      ["--tcp-ports", "20099-20000"],
      /--tcp-ports 20099-20000 runs backwards/,
      /hint: give the lower port first: --tcp-ports 20000-20099/,
    ],
    [["--tcp-host", "0.0.0.0"], /--tcp-host goes with --tcp-ports/, /hint: add the range/],
  ])("%j", async (args, message, hint) => {
    const { status, output } = await run(args);
    expect(status).toBe(2);
    expect(output).toMatch(message);
    expect(output).toMatch(hint);
  });
});
