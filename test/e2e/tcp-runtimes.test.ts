// A TCP tunnel with both ends on each other runtime: `agent --tcp` and `agent connect` under Bun,
// Deno and the single executable (Node: tcp.test.ts, with the big transfers and redis), ssh and
// a smaller scp through a real sshd.
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime } from "../_agent.ts";
import { sha256 } from "../_bytes.ts";
import { executableLauncher } from "../_package.ts";
import { Relay } from "../_relay.ts";
import { type Sshd, skipServices, startSshd } from "../_services.ts";
import { keyFile, proxyCommand, scratch, TunnelSsh } from "./_tcp.ts";

const MB = 1024 * 1024;
const KEY = "runtime-key-0123456789";
const skip = skipServices("the TCP tunnel's runtime tests");

let relay: Relay;
let sshd: Sshd;
const dir = scratch();
const keys = keyFile(dir, "keys", KEY);

beforeAll(async () => {
  if (skip) return;
  [relay, sshd] = await Promise.all([Relay.start(), startSshd()]);
}, 90_000);

afterAll(async () => {
  await relay?.dispose();
  await sshd?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const RUNTIMES: [string, () => AgentRuntime][] = [
  ["bun", () => "bun"],
  ["deno", () => "deno"],
  // A copy with no runtime on its PATH (test/_package.ts), as a user's machine may be.
  ["executable", () => executableLauncher(inject("agentExecutable"))],
];

describe.skipIf(skip).each(RUNTIMES)("a TCP tunnel with agent and connect on %s", (label, launch) => {
  let runtime: AgentRuntime;
  let agent: AgentProcess;
  let tunnel: TunnelSsh;
  const name = `tcp-${label}`;

  beforeAll(async () => {
    runtime = launch();
    agent = await AgentProcess.start(runtime, [
      ...["--tcp", String(sshd.port), "--connect-key-file", keys, "--relay", relay.url, "--name", name],
    ]);
    tunnel = new TunnelSsh(sshd, name, proxyCommand(runtime, relay, { file: keys }));
  }, 60_000);

  afterAll(async () => {
    await agent?.stop("SIGINT");
    if (runtime && typeof runtime !== "string") rmSync(runtime.cwd, { recursive: true, force: true });
  });

  it("runs a command over ssh with connect --stdio as ProxyCommand, with its output and exit status", async () => {
    expect(await tunnel.ssh("echo hello; exit 3")).toMatchObject({ code: 3, stdout: "hello\n", stderr: "" });
    const from = agent.lines.length;
    expect(await tunnel.ssh("true")).toMatchObject({ code: 0 });
    // The agent logs the connection once, however it ended: a reset fails here with its line,
    // not as a wait for "closed" until the test's timeout.
    const [ended] = await agent.waitFor(new RegExp(`^tcp from \\S+ -> localhost:${sshd.port} .*$`), {
      from,
      timeoutMs: 20_000,
    });
    expect(ended).toMatch(/ closed: /);
  }, 90_000);

  it("takes the key from BURROW_CONNECT_KEY", async () => {
    const withEnv = new TunnelSsh(sshd, name, proxyCommand(runtime, relay, { env: { BURROW_CONNECT_KEY: KEY } }));
    expect(await withEnv.ssh("echo by env")).toMatchObject({ code: 0, stdout: "by env\n" });
  });

  it("copies 5 MB each way with scp, unchanged", async () => {
    const bytes = randomBytes(5 * MB);
    const local = join(dir, `${label}.bin`);
    const remote = join(sshd.dir, `${label}.bin`);
    writeFileSync(local, bytes);
    expect(await tunnel.scp(local, tunnel.remote(remote))).toMatchObject({ code: 0, stderr: "" });
    expect(sha256(readFileSync(remote))).toBe(sha256(bytes));
    expect(await tunnel.scp(tunnel.remote(remote), `${local}.back`)).toMatchObject({ code: 0, stderr: "" });
    expect(sha256(readFileSync(`${local}.back`))).toBe(sha256(bytes));
  }, 60_000);
});
