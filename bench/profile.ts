// `npm run bench:profile`: where a request's time goes, function by function. Runs small GETs
// through Burrow (an agent on workerd serve, as the benchmark does) while taking CPU profiles
// of the relay's workerd (through its V8 inspector) and of the agent (its runtime's --cpu-prof), then
// prints each process's CPU per request and its heaviest functions by self time.
// Environment: PROFILE_RUNTIME (node; bun or deno profile that agent instead), PROFILE_SECONDS (5), PROFILE_CONNECTIONS (50), PROFILE_TOP (25), PROFILE_PATH
// (/small; /bytes/16777216 profiles downloads of 16 MiB, say), PROFILE_AGENT_ARGS (more
// arguments for the agent, e.g. "--inspect false"), PROFILE_LINES (names of the relay's
// functions whose hottest source lines to list, e.g. "visit,handle"), PROFILE_RELAY (workerd;
// selfhost-node profiles `agent relay` on Node instead, through its inspector).
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import autocannon from "autocannon";
import WebSocket from "ws";
import { AgentProcess, agentCommand, type Launcher, type RuntimeName, tunnelArgs } from "../test/_agent.ts";
import { command, cpuTime, processTree } from "../test/_memory.ts";
import { Child, freePort } from "../test/_process.ts";
import { Relay, ROOT } from "../test/_relay.ts";

const SECONDS = Number(process.env.PROFILE_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.PROFILE_CONNECTIONS ?? 50);
const TOP = Number(process.env.PROFILE_TOP ?? 25);
const PATH = process.env.PROFILE_PATH ?? "/small";
const LINES = (process.env.PROFILE_LINES ?? "").split(",").filter(Boolean);
const RUNTIME = (process.env.PROFILE_RUNTIME ?? "node") as RuntimeName;
if (!["node", "bun", "deno"].includes(RUNTIME)) throw new Error(`PROFILE_RUNTIME is node, bun or deno, not "${RUNTIME}"`);
const RELAY = process.env.PROFILE_RELAY ?? "workerd";
if (!["workerd", "selfhost-node"].includes(RELAY)) throw new Error(`PROFILE_RELAY is workerd or selfhost-node, not "${RELAY}"`);

/** The agent as the bench starts it on `runtime`, with its runtime's V8 (or JSC) CPU profiler writing to `dir` on exit. */
function profiledAgent(runtime: RuntimeName, dir: string): Launcher {
  const flags = ["--cpu-prof", `--cpu-prof-dir=${dir}`];
  if (runtime !== "deno") {
    const [program, argv] = agentCommand(runtime, []);
    return { name: runtime, cwd: ROOT, command: (args) => [program, [...flags, ...argv, ...args]] };
  }
  // `deno task agent` with the profiler's flags after `run`: the task's own permissions and V8 flags.
  const task = (JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")) as { tasks: { agent: { command: string } } }).tasks
    .agent;
  const words = task.command
    .replaceAll("$HOME", process.env.HOME ?? "")
    .split(" ")
    .filter(Boolean);
  const [, run, ...rest] = words;
  return {
    name: runtime,
    cwd: ROOT,
    command: (args) => [join(ROOT, "node_modules/.bin/deno"), [run!, ...flags, ...rest, ...args]],
  };
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; scriptId: string };
  children?: number[];
  positionTicks?: { line: number; ticks: number }[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A minimal DevTools-protocol client: one call at a time is all this needs. */
async function inspect(port: number): Promise<(method: string, params?: object) => Promise<Record<string, unknown>>> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
  const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  let next = 1;
  const pending = new Map<number, (result: Record<string, unknown>) => void>();
  ws.on("message", (data) => {
    const message = JSON.parse(String(data)) as { id?: number; result?: Record<string, unknown> };
    if (message.id !== undefined) pending.get(message.id)?.(message.result ?? {});
  });
  return (method, params = {}) =>
    new Promise((resolve) => {
      const id = next++;
      pending.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
}

/** Self time (ms) per function, heaviest first, and the profile's busy time (not idle). */
function selfTimes(profile: CpuProfile): { busyMs: number; rows: { fn: string; ms: number }[] } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, number>();
  let busy = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!)!;
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)" || functionName === "(program)") continue;
    busy += ms;
    const file = url.replace(/^.*\/(node_modules\/)?/, "");
    const key = `${functionName || "(anonymous)"} ${file ? `${file}:${lineNumber + 1}` : ""}`.trim();
    self.set(key, (self.get(key) ?? 0) + ms);
  }
  const rows = [...self].map(([fn, ms]) => ({ fn, ms })).sort((a, b) => b.ms - a.ms);
  return { busyMs: busy, rows };
}

function print(title: string, profile: CpuProfile, requests: number): void {
  const { busyMs, rows } = selfTimes(profile);
  const wall = (profile.endTime - profile.startTime) / 1000;
  console.log(
    `\n${title}: busy ${(busyMs / 1000).toFixed(2)} s of ${(wall / 1000).toFixed(2)} s, ${((1000 * busyMs) / requests).toFixed(1)} µs of CPU per request`,
  );
  console.table(
    rows.slice(0, TOP).map((row) => ({
      function: row.fn.slice(0, 90),
      "self ms": row.ms.toFixed(0),
      "%": ((100 * row.ms) / busyMs).toFixed(1),
      "µs/req": ((1000 * row.ms) / requests).toFixed(1),
    })),
  );
}

/**
 * The hottest source lines of the named functions, from the samples' line ticks: where inside
 * a function its self time goes (V8 inlines small callees, whose time then shows as the caller's).
 */
async function printLines(
  profile: CpuProfile,
  requests: number,
  call: (method: string, params?: object) => Promise<Record<string, unknown>>,
): Promise<void> {
  const interval = (profile.endTime - profile.startTime) / profile.samples.length; // µs per tick
  const sources = new Map<string, string[]>();
  for (const name of LINES) {
    const ticks = new Map<string, { line: number; scriptId: string; ticks: number }>();
    for (const node of profile.nodes) {
      if (node.callFrame.functionName !== name) continue;
      for (const { line, ticks: n } of node.positionTicks ?? []) {
        const key = `${node.callFrame.scriptId}:${line}`;
        const entry = ticks.get(key) ?? { line, scriptId: node.callFrame.scriptId, ticks: 0 };
        entry.ticks += n;
        ticks.set(key, entry);
      }
    }
    console.log(`\nhottest lines of ${name}:`);
    for (const { line, scriptId, ticks: n } of [...ticks.values()].sort((a, b) => b.ticks - a.ticks).slice(0, 12)) {
      if (!sources.has(scriptId)) {
        const { scriptSource } = (await call("Debugger.getScriptSource", { scriptId })) as { scriptSource?: string };
        sources.set(scriptId, (scriptSource ?? "").split("\n"));
      }
      const text = sources.get(scriptId)![line - 1]?.trim().slice(0, 100) ?? "";
      console.log(`  ${((n * interval) / requests).toFixed(1).padStart(6)} µs/req  line ${line}: ${text}`);
    }
  }
}

const stops: (() => Promise<unknown>)[] = [];
try {
  const origin = new Child("origin", process.execPath, [join(ROOT, "bench/_origin.js")], { cwd: ROOT });
  stops.push(() => origin.stop());
  const originPort = Number((await origin.waitFor(/^listening (\d+)/))[1]);
  const inspectorPort = await freePort();
  const profiles = mkdtempSync(join(tmpdir(), "burrow-profile-"));
  // The self-hosted relay takes its vars from the environment, NODE_OPTIONS among them (Node 20
  // refuses --cpu-prof there, --inspect it takes): profiled through its inspector as workerd is.
  const relay =
    RELAY === "workerd"
      ? await Relay.start({ launcher: "workerd", inspector: inspectorPort })
      : await Relay.start({ launcher: "selfhost-node", vars: { NODE_OPTIONS: `--inspect=127.0.0.1:${inspectorPort}` } });
  stops.push(() => relay.dispose());
  const profiled = profiledAgent(RUNTIME, profiles);
  const extra = (process.env.PROFILE_AGENT_ARGS ?? "").split(" ").filter(Boolean);
  const agent = await AgentProcess.start(profiled, [...tunnelArgs(originPort, relay, "profile"), ...extra]);
  stops.push(() => agent.stop("SIGINT"));
  const url = new URL(agent.url);
  const target = { url: `http://127.0.0.1:${url.port}${PATH}`, headers: { host: url.host } };
  // Warm up (JIT, pools), then profile the relay over one load run; the agent's profile covers
  // its whole life, so its per-request figures include the warm-up (counted in).
  const warm = await autocannon({ ...target, connections: CONNECTIONS, duration: 2 });
  // First without the profiler: each process's CPU time per request, from /proc.
  const workerd =
    RELAY === "workerd" ? (processTree(relay.pid).find((pid) => command(pid) === "workerd") ?? relay.pid) : relay.pid;
  const processes = { relay: workerd, agent: agent.runtimePid, origin: origin.pid };
  const before = Object.values(processes).map(cpuTime);
  const plain = await autocannon({ ...target, connections: CONNECTIONS, duration: SECONDS });
  const used = Object.values(processes).map((pid, i) => cpuTime(pid) - before[i]!);
  console.log(
    `without the profiler: ${plain.requests.total} requests at c=${CONNECTIONS} in ${SECONDS} s, ${plain.requests.average.toFixed(0)} req/s, p50 ${plain.latency.p50} ms; CPU per request: ${Object.keys(
      processes,
    )
      .map((name, i) => `${name} ${((1000 * used[i]!) / plain.requests.total).toFixed(0)} µs`)
      .join(", ")}`,
  );
  const call = await inspect(inspectorPort);
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 100 });
  await call("Profiler.start");
  const result = await autocannon({ ...target, connections: CONNECTIONS, duration: SECONDS });
  const { profile } = (await call("Profiler.stop")) as { profile: CpuProfile };
  const requests = result.requests.total;
  console.log(
    `profiled: ${requests} requests at c=${CONNECTIONS} in ${SECONDS} s: ${result.requests.average.toFixed(0)} req/s, p50 ${result.latency.p50} ms, ${result.errors + result.non2xx} errors`,
  );
  print(RELAY === "workerd" ? "relay (workerd: Worker and Durable Object, one isolate)" : `relay (${RELAY})`, profile, requests);
  if (LINES.length > 0) {
    await call("Debugger.enable");
    await printLines(profile, requests, call);
  }
  await stops.pop()!();
  const file = readdirSync(profiles).find((f) => f.endsWith(".cpuprofile"));
  if (file) {
    const agentProfile = JSON.parse(readFileSync(join(profiles, file), "utf8")) as CpuProfile;
    print(
      `agent (${RUNTIME}, whole run incl. warm-up and start)`,
      agentProfile,
      requests + plain.requests.total + warm.requests.total,
    );
  } else {
    console.log("\nagent: no profile written");
  }
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
}
