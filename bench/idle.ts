// `npm run bench:idle`: how many idle tunnels one relay process holds, and what each costs. Opens
// IDLE_TUNNELS raw agent connections (test/_raw-agent.ts: hello, Ready, then a heartbeat every
// 20 s as the agent sends them) against one relay, leaves them idle, then sends one visitor
// request through each tunnel, answered by its raw agent, and prints the relay process's memory
// (VmRSS from /proc: workerd's for the Cloudflare relay) per idle tunnel.
// Environment: IDLE_TUNNELS (5000), IDLE_LAUNCHER (workerd, selfhost-node, selfhost-bun or selfhost-deno:
// the launchers of test/_relay.ts),
// IDLE_SECONDS (60 of idleness before the check), IDLE_CONCURRENCY (50 hellos or requests at once).
// Each process holds a descriptor per tunnel: the harness and the relay need `ulimit -n` above
// IDLE_TUNNELS + 1024 (checked below; the relay inherits the harness's limit).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { FrameType, HEARTBEAT, type ReadyFrame } from "@burrow/protocol";
import { command, cpuTime, memory, processTree } from "../test/_memory.ts";
import { RawAgent } from "../test/_raw-agent.ts";
import { Relay, type RelayLauncher, ROOT } from "../test/_relay.ts";

const TUNNELS = Number(process.env.IDLE_TUNNELS ?? 5000);
const LAUNCHER = (process.env.IDLE_LAUNCHER ?? "workerd") as RelayLauncher;
const IDLE_SECONDS = Number(process.env.IDLE_SECONDS ?? 60);
const CONCURRENCY = Number(process.env.IDLE_CONCURRENCY ?? 50);
/** The agent's default --heartbeat. */
const HEARTBEAT_MS = 20_000;
const MB = 1e6;

/** The soft limit on open files of this process (its children inherit it). */
function openFilesLimit(): number {
  const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? "unlimited";
  return line === "unlimited" ? Number.POSITIVE_INFINITY : Number(line);
}

/** Runs `work(i)` for i in [0, count) with at most `limit` at once. */
async function pool(count: number, limit: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

interface Tunnel {
  name: string;
  agent: RawAgent;
  /** The public URL from Ready: its host (and path, for /t/<name>/) is what a visitor sends. */
  url: URL;
}

/** One visitor GET through `tunnel`, answered by its raw agent with the tunnel's name. */
async function visit(relay: Relay, tunnel: Tunnel): Promise<void> {
  const answered = (async () => {
    const head = await tunnel.agent.nextOf(FrameType.RequestHead);
    const body = new TextEncoder().encode(tunnel.name);
    tunnel.agent.send({
      type: FrameType.ResponseHead,
      stream: head.stream,
      status: 200,
      headers: [["content-length", String(body.length)]],
    });
    tunnel.agent.send({ type: FrameType.Data, stream: head.stream, bytes: body });
    tunnel.agent.send({ type: FrameType.End, stream: head.stream });
  })();
  const text = await new Promise<string>((resolve, reject) => {
    const request = http.get(
      { host: "127.0.0.1", port: relay.port, path: tunnel.url.pathname, headers: { host: tunnel.url.host }, agent: false },
      (response) => {
        let data = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          data += chunk;
        });
        response.on("end", () =>
          response.statusCode === 200 ? resolve(data) : reject(new Error(`${response.statusCode}: ${data.slice(0, 200)}`)),
        );
      },
    );
    request.setTimeout(30_000, () => request.destroy(new Error("no answer within 30 s")));
    request.on("error", reject);
  });
  await answered;
  if (text !== tunnel.name) throw new Error(`answered "${text.slice(0, 60)}", not its own name`);
}

const limit = openFilesLimit();
if (limit < TUNNELS + 1024) {
  throw new Error(
    `open files are limited to ${limit} (ulimit -n); ${TUNNELS} tunnels need at least ${TUNNELS + 1024}: run \`ulimit -n ${TUNNELS + 4096}\` in this shell first (up to the hard limit, ulimit -Hn)`,
  );
}

const tunnels: Tunnel[] = [];
let heartbeats: NodeJS.Timeout | undefined;
// The limits the harness raises already (test/_relay.ts: CONNECTS_PER_MINUTE, all from
// 127.0.0.1); a connection that never says hello in time is closed, so hellos queue in the pool
// rather than in the relay.
const relay = await Relay.start({ launcher: LAUNCHER });
try {
  /**
   * The relay's own process: workerd under the Cloudflare launchers; else the launcher's process
   * tree (`agent relay` itself; under Deno, `deno task` and the `deno run` it starts).
   */
  const relayPids = () => {
    const tree = processTree(relay.pid);
    const workerd = tree.filter((pid) => command(pid) === "workerd");
    return workerd.length > 0 ? workerd : tree;
  };
  const rss = () => relayPids().reduce((sum, pid) => sum + memory(pid).rss, 0);
  const cpu = () => relayPids().reduce((sum, pid) => sum + cpuTime(pid), 0);

  // One tunnel and one visit first, so that the baseline holds the loaded code and its first objects.
  const open = async (name: string) => {
    const [agent, answer] = await RawAgent.say(relay, name);
    if (answer.type !== FrameType.Ready) throw new Error(`${name}: the relay did not answer Ready: ${JSON.stringify(answer)}`);
    const tunnel = { name, agent, url: new URL((answer as ReadyFrame).url) };
    tunnels.push(tunnel);
    return tunnel;
  };
  await visit(relay, await open("idle-warm"));
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const baseline = rss();
  console.log(`relay (${LAUNCHER}) on port ${relay.port}: ${(baseline / MB).toFixed(0)} MB resident with one tunnel`);

  const opening = performance.now();
  await pool(TUNNELS, CONCURRENCY, async (i) => {
    await open(`idle-${i}`);
    if ((i + 1) % 1000 === 0) console.log(`  ${i + 1} tunnels open, relay ${(rss() / MB).toFixed(0)} MB`);
  });
  const openSeconds = (performance.now() - opening) / 1000;
  const afterOpen = rss();
  console.log(`${TUNNELS} tunnels open in ${openSeconds.toFixed(1)} s (${(TUNNELS / openSeconds).toFixed(0)} hellos/s)`);

  // Idle: each agent's heartbeat every 20 s, spread over the period as independent agents' would be.
  let turn = 0;
  const perTick = Math.ceil(tunnels.length / (HEARTBEAT_MS / 100));
  heartbeats = setInterval(() => {
    for (let k = 0; k < perTick; k++) {
      const tunnel = tunnels[turn++ % tunnels.length]!;
      if (tunnel.agent.socket.readyState === tunnel.agent.socket.OPEN) tunnel.agent.socket.send(HEARTBEAT.ping);
    }
  }, 100);
  const cpuBefore = cpu();
  let peak = afterOpen;
  for (let s = 0; s < IDLE_SECONDS; s++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    peak = Math.max(peak, rss());
  }
  const idleCpuMs = cpu() - cpuBefore;
  const afterIdle = rss();
  const closedWhileIdle = tunnels.filter((t) => t.agent.socket.readyState !== t.agent.socket.OPEN).length;
  console.log(
    `idle ${IDLE_SECONDS} s: relay ${(afterIdle / MB).toFixed(0)} MB (peak ${(peak / MB).toFixed(0)}), CPU ${((100 * idleCpuMs) / (IDLE_SECONDS * 1000)).toFixed(1)}% of a core, ${closedWhileIdle} connections closed`,
  );

  const checking = performance.now();
  const failures: string[] = [];
  await pool(tunnels.length, CONCURRENCY, async (i) => {
    const tunnel = tunnels[i]!;
    try {
      await visit(relay, tunnel);
    } catch (error) {
      failures.push(`${tunnel.name}: ${(error as Error).message}`);
    }
  });
  const checkSeconds = (performance.now() - checking) / 1000;
  const afterCheck = rss();
  const answered = tunnels.length - failures.length;
  console.log(`visited every tunnel in ${checkSeconds.toFixed(1)} s: ${answered} of ${tunnels.length} answered`);
  for (const failure of failures.slice(0, 5)) console.log(`  ${failure}`);

  const perTunnel = (bytes: number) => ((bytes - baseline) / TUNNELS / 1024).toFixed(1);
  console.table([
    {
      relay: LAUNCHER,
      tunnels: TUNNELS,
      "open s": openSeconds.toFixed(1),
      "baseline MB": (baseline / MB).toFixed(0),
      "after open MB": (afterOpen / MB).toFixed(0),
      "after idle MB": (afterIdle / MB).toFixed(0),
      "after visits MB": (afterCheck / MB).toFixed(0),
      "KiB per idle tunnel": perTunnel(afterIdle),
      "KiB per tunnel, visited": perTunnel(afterCheck),
      "idle CPU %": ((100 * idleCpuMs) / (IDLE_SECONDS * 1000)).toFixed(1),
      answered: `${answered}/${tunnels.length}`,
    },
  ]);
  const dir = join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `idle-${LAUNCHER}-${new Date().toISOString().replaceAll(":", "-")}.json`);
  const figures = { baseline, afterOpen, peak, afterIdle, afterCheck, openSeconds, checkSeconds, idleCpuMs };
  writeFileSync(
    file,
    `${JSON.stringify({ date: new Date().toISOString(), launcher: LAUNCHER, tunnels: TUNNELS, idleSeconds: IDLE_SECONDS, figures, answered, failures: failures.slice(0, 100) }, null, 2)}\n`,
  );
  console.log(`wrote ${file}`);
  if (failures.length > 0) process.exitCode = 1;
} finally {
  clearInterval(heartbeats);
  for (const { agent } of tunnels) agent.socket.terminate();
  await relay.dispose();
}
