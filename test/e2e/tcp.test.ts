// TCP tunnels as a user sees them, on Node: ssh, scp and git through `agent connect --stdio` as
// ssh's ProxyCommand, a half-close both ways, an interactive session in a terminal, and
// redis-benchmark through `agent connect --listen`, against a real sshd and redis-server.
// The other runtimes: tcp-runtimes.test.ts; who may connect: tcp-access.test.ts.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand } from "../_agent.ts";
import { sha256 } from "../_bytes.ts";
import { freePort } from "../_process.ts";
import { Relay } from "../_relay.ts";
import { type RedisServer, redisBenchmark, type Sshd, skipServices, sshRun, startRedis, startSshd } from "../_services.ts";
import { hasTmux, shellQuote, Terminal } from "../_tmux.ts";
import { type AfterEofServer, keyFile, proxyCommand, scratch, startAfterEofServer, TunnelSsh } from "./_tcp.ts";

const MB = 1024 * 1024;
const KEY = "tcp-e2e-key-0123456789";
const skip = skipServices("the TCP tunnel's end-to-end tests");

describe.skipIf(skip)("a TCP tunnel through a Node agent and connect", () => {
  let relay: Relay;
  let sshd: Sshd;
  let redis: RedisServer;
  let eof: AfterEofServer;
  let sshAgent: AgentProcess;
  let redisAgent: AgentProcess;
  let eofAgent: AgentProcess;
  let tunnel: TunnelSsh;
  const dir = scratch();
  const keys = keyFile(dir, "keys", KEY);

  /** `agent ...args --connect-key-file keys --relay R --name NAME`, up. */
  const serve = (args: string[], name: string) =>
    AgentProcess.start("node", [...args, "--connect-key-file", keys, "--relay", relay.url, "--name", name]);

  beforeAll(async () => {
    [relay, sshd, redis, eof] = await Promise.all([
      // redis-benchmark's own first connection (CONFIG GET) may still be closing at the relay
      // when its 100 clients open (it pauses 50 ms after each 64, which usually covers it):
      // the tunnel admits one more than the clients.
      Relay.start({ vars: { MAX_STREAMS_PER_TUNNEL: "101" } }),
      startSshd(),
      startRedis(),
      startAfterEofServer(),
    ]);
    [sshAgent, redisAgent, eofAgent] = await Promise.all([
      serve(["--tcp", String(sshd.port)], "box"),
      // ngrok's shape, and HOST:PORT: the same tunnel as --tcp PORT.
      serve(["tcp", String(redis.port)], "cache"),
      serve(["--tcp", `127.0.0.1:${eof.port}`], "after-eof"),
    ]);
    tunnel = new TunnelSsh(sshd, "box", proxyCommand("node", relay, { file: keys }));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([sshAgent, redisAgent, eofAgent].map((agent) => agent?.stop("SIGINT")));
    await relay?.dispose();
    await Promise.all([sshd?.stop(), redis?.stop(), eof?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints the tunnel's target on its up line", () => {
    expect(sshAgent.lines).toContain(`tunnel box is up: ${sshAgent.url} -> tcp localhost:${sshd.port}`);
    expect(eofAgent.lines).toContain(`tunnel after-eof is up: ${eofAgent.url} -> tcp 127.0.0.1:${eof.port}`);
  });

  it("runs a command over ssh with connect --stdio as ProxyCommand, with its output and exit status", async () => {
    const from = sshAgent.lines.length;
    const ok = await tunnel.ssh("echo hello; echo to stderr >&2");
    expect(ok).toMatchObject({ code: 0, stdout: "hello\n", stderr: "to stderr\n" });
    const failed = await tunnel.ssh("exit 7");
    expect(failed).toMatchObject({ code: 7, stdout: "", stderr: "" });
    // The agent logs each connection once, with its bytes, when it ends: closed both ways, as
    // ssh left it (the ProxyCommand's SIGHUP does not reset it).
    const ends = () => sshAgent.lines.slice(from).filter((line) => line.startsWith("tcp "));
    await waitUntil(
      () => ends().length >= 2,
      () => `the agent logged ${ends().length} of 2 connections:\n${sshAgent.output}`,
    );
    for (const line of ends()) {
      expect(line).toMatch(
        new RegExp(`^tcp from 127\\.0\\.0\\.1 -> localhost:${sshd.port} closed: \\d+ bytes in, \\d+ out, [\\d.]+s$`),
      );
    }
  });

  it("copies 50 MB each way with scp, unchanged", async () => {
    const bytes = randomBytes(50 * MB);
    writeFileSync(join(dir, "there.bin"), bytes);
    const remote = join(sshd.dir, "there.bin");
    expect(await tunnel.scp(join(dir, "there.bin"), tunnel.remote(remote))).toMatchObject({ code: 0, stderr: "" });
    expect(sha256(readFileSync(remote))).toBe(sha256(bytes));
    expect(await tunnel.scp(tunnel.remote(remote), join(dir, "back.bin"))).toMatchObject({ code: 0, stderr: "" });
    expect(sha256(readFileSync(join(dir, "back.bin")))).toBe(sha256(bytes));
  }, 120_000);

  it("clones and pushes a git repository over ssh through the tunnel", async () => {
    const bare = join(sshd.dir, "repo.git");
    execFileSync("git", ["init", "-q", "--bare", "-b", "main", bare]);
    const git = (...args: string[]) =>
      sshRun("git", ["-c", `core.sshCommand=${tunnel.command}`, "-c", "user.name=T", "-c", "user.email=t@example.com", ...args], {
        timeoutMs: 60_000,
      });
    const work = join(dir, "work");
    expect(await git("clone", "-q", tunnel.remote(bare), work)).toMatchObject({ code: 0 });
    writeFileSync(join(work, "README"), "through the tunnel\n");
    expect(await git("-C", work, "add", "README")).toMatchObject({ code: 0 });
    expect(await git("-C", work, "commit", "-q", "-m", "first")).toMatchObject({ code: 0 });
    expect(await git("-C", work, "push", "-q", "origin", "HEAD:main")).toMatchObject({ code: 0 });
    const again = join(dir, "again");
    expect(await git("clone", "-q", "-b", "main", tunnel.remote(bare), again)).toMatchObject({ code: 0 });
    expect(readFileSync(join(again, "README"), "utf8")).toBe("through the tunnel\n");
  }, 90_000);

  it("takes ssh's end of input to the command, and still brings its answer back", async () => {
    const file = join(sshd.dir, "from-stdin");
    const result = await tunnel.ssh(`cat > ${file}; echo done`, { input: "data\n" });
    expect(result).toMatchObject({ code: 0, stdout: "done\n" });
    expect(readFileSync(file, "utf8")).toBe("data\n");
  });

  it("carries a raw connection's EOF to the service and the service's answer and EOF back, through --stdio", async () => {
    // Not ssh (its EOF is a message inside its own protocol): stdin's end is the TCP stream's.
    const bytes = randomBytes(3 * MB + 5);
    const [command, args] = agentCommand("node", ["connect", "after-eof", "--stdio", "--relay", relay.url, "--key-file", keys]);
    const result = await sshRun(command, args, { input: bytes, timeoutMs: 60_000 });
    expect(result).toMatchObject({ code: 0, stdout: eof.answerFor(bytes), stderr: "" });
  });

  it("carries a raw connection's EOF to the service and the service's answer and EOF back, through --listen", async () => {
    const port = await freePort();
    const listener = new AgentProcess("node", [
      ...["connect", "after-eof", "--listen", `127.0.0.1:${port}`, "--relay", relay.url, "--key-file", keys],
    ]);
    try {
      await listener.waitFor(/^connected to tunnel after-eof: /);
      const bytes = randomBytes(MB + 3);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () => socket.end(bytes));
        let text = "";
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => {
          text += chunk;
        });
        socket.on("end", () => resolve(text));
        socket.on("error", reject);
      });
      expect(answer).toBe(eof.answerFor(bytes));
    } finally {
      await listener.stop("SIGINT");
    }
  });

  it.skipIf(!hasTmux("the interactive ssh session"))(
    "holds an interactive ssh session in a terminal: its prompt, a typed command, exit",
    async () => {
      const terminal = new Terminal(`${tunnel.command} ${shellQuote(tunnel.target)}; echo "ssh exited $?"; sleep 600`, {
        cwd: dir,
      });
      try {
        // A shell's prompt ends in $, # or %, with the cursor after it.
        await terminal.until((rows) => /[$#%>] ?$/.test(rows.filter((row) => row.trim()).at(-1) ?? ""), 30_000);
        terminal.type("echo tcp-$((6 * 7)) $TERM");
        await terminal.until((rows) => rows.some((row) => /^tcp-42 \S+$/.test(row)));
        terminal.type("exit");
        const rows = await terminal.until((screen) => screen.some((row) => row.startsWith("ssh exited")));
        expect(rows).toContain("ssh exited 0");
      } finally {
        terminal.close();
      }
    },
    60_000,
  );

  describe("redis through connect --listen", () => {
    let connect: AgentProcess;
    let port: number;

    beforeAll(async () => {
      port = await freePort();
      // --debug: a line for each local connection's open and end, to tell when all have ended.
      connect = new AgentProcess("node", [
        ...["connect", "cache", "--listen", `127.0.0.1:${port}`, "--relay", relay.url, "--key-file", keys, "--debug"],
      ]);
      await connect.waitFor(/^connected to tunnel cache: connect to 127\.0\.0\.1:\d+$/);
    });

    afterAll(async () => {
      await connect?.stop("SIGINT");
    });

    /** Local connections the connect has opened and not yet seen end. */
    function open(): number {
      const opened = connect.lines.filter((line) => /^debug: connection \d+ opened/.test(line)).length;
      const ended = connect.lines.filter((line) =>
        /^(debug|warning): connection \d+ (closed|reset-here|was reset)\b/.test(line),
      ).length;
      return opened - ended;
    }

    it.each(["get", "set"])(
      "answers every %s of redis-benchmark with 100 clients, with no error",
      async (test) => {
        // The relay forgets a stream before the connect sees its end: once none is open here,
        // the last run's streams no longer count against the tunnel's 100 (MAX_STREAMS_PER_TUNNEL).
        await waitUntil(
          () => open() === 0,
          () => `connections still open:\n${connect.output}`,
        );
        const result = await redisBenchmark({ port, clients: 100, requests: 20_000, tests: test });
        expect(result.errors, `${result.output}\nconnect said:\n${connect.output}`).toBe(0);
        expect(result.opsPerSecond[test.toUpperCase()]).toBeGreaterThan(0);
        expect(connect.output).not.toMatch(/warning|error/);
      },
      120_000,
    );
  });
});

/** Polls `done` every 50 ms, up to 30 s; then fails with `why()`. */
async function waitUntil(done: () => boolean, why: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
