// `npm run bench:tcp-profile`: what one workload through one TCP path (bench/_tcp-paths.ts) costs
// each of the path's processes, in CPU time from /proc: per MB for a transfer, per 1000 requests
// for redis-benchmark. The CPU a byte costs is what a 2-core machine shared with other work can
// compare between two runs, where the throughput swings with the machine's load.
// Environment: PROFILE_PATH (tcp-selfhost-node; tcp-workerd, tcp-ssh, tcp-direct), PROFILE_WORK
// (down: the byte service sends; up: it receives; redis: GET and SET at 50 clients), PROFILE_BYTES
// (512 MiB), PROFILE_REQUESTS (100000 per redis test), PROFILE_PAIRS (3), and
// TCP_PROFILE_AB_TREE: another checkout (a worktree at the commit before a change, with its own
// `npm ci`) whose path, its agents and relay, runs alternately with this checkout's, PROFILE_PAIRS
// times each (A = that checkout, B = this one); without it, this checkout's path runs once.
import { loadavg } from "node:os";
import { join } from "node:path";
import { command, cpuTime } from "../test/_memory.ts";
import { Child } from "../test/_process.ts";
import { ROOT } from "../test/_relay.ts";
import { redisBenchmark, startRedis } from "../test/_services.ts";
import { tcpDownload, tcpUpload } from "./_tcp-measure.ts";
import type { TcpPathPlan } from "./_tcp-paths.ts";

const PATH = process.env.PROFILE_PATH ?? "tcp-selfhost-node";
const WORK = process.env.PROFILE_WORK ?? "down";
if (!["down", "up", "redis"].includes(WORK)) throw new Error(`PROFILE_WORK is down, up or redis, not "${WORK}"`);
const BYTES = Number(process.env.PROFILE_BYTES ?? 512 * 1024 ** 2);
const REQUESTS = Number(process.env.PROFILE_REQUESTS ?? 100_000);
const PAIRS = Number(process.env.PROFILE_PAIRS ?? 3);
const AB_TREE = process.env.TCP_PROFILE_AB_TREE;
/** What Burrow's paths list in pids(), in order (see bench/_tcp-paths.ts). */
const BURROW_ROLES = ["agent", "connect", "relay"];

/** CPU ms so far, or undefined once the process is gone (sshd's per-connection children). */
function cpuOf(pid: number): number | undefined {
  try {
    return cpuTime(pid);
  } catch {
    return undefined;
  }
}

/** One run of the workload through `tree`'s path; prints a line and returns nothing. */
async function run(tree: string, label: string): Promise<void> {
  const { TCP_PATHS } = (await import(join(tree, "bench/_tcp-paths.ts"))) as { TCP_PATHS: TcpPathPlan[] };
  const plan = TCP_PATHS.find((p) => p.id === PATH);
  if (!plan) throw new Error(`PROFILE_PATH: no path "${PATH}" in ${tree}`);
  const stops: (() => Promise<unknown>)[] = [];
  try {
    let servicePort: number;
    if (WORK === "redis") {
      const redis = await startRedis();
      stops.push(redis.stop);
      servicePort = redis.port;
    } else {
      const origin = new Child("tcp origin", process.execPath, [join(ROOT, "bench/_tcp-origin.js")], { cwd: ROOT });
      stops.push(() => origin.stop());
      servicePort = Number((await origin.waitFor(/^listening (\d+)/))[1]);
    }
    const open = await plan.prepare(stops);
    if (typeof open === "string") throw new Error(`${PATH}: ${open}`);
    const path = await open(servicePort);
    stops.push(path.stop);
    const pids = path.pids?.() ?? [];
    const load = loadavg()[0]!.toFixed(1);
    const before = pids.map(cpuOf);
    const self = process.cpuUsage();
    let result: string;
    let units: number;
    if (WORK === "redis") {
      const redis = await redisBenchmark({
        port: path.port,
        clients: 50,
        requests: REQUESTS,
        tests: "get,set",
        timeoutMs: 600_000,
      });
      result = `GET ${redis.opsPerSecond.GET?.toFixed(0)} SET ${redis.opsPerSecond.SET?.toFixed(0)} ops/s`;
      units = (2 * REQUESTS) / 1000;
    } else {
      const mbps = WORK === "down" ? await tcpDownload(path.port, BYTES) : await tcpUpload(path.port, BYTES);
      result = `${mbps.toFixed(0)} MB/s ${WORK}`;
      units = BYTES / 1e6;
    }
    const client = process.cpuUsage(self);
    const burrow = PATH.startsWith("tcp-") && !["tcp-direct", "tcp-ssh"].includes(PATH);
    const costs = pids.map((pid, i) => {
      const used = (cpuOf(pid) ?? Number.NaN) - (before[i] ?? Number.NaN);
      return `${burrow ? BURROW_ROLES[i] : `${command(pid) || "gone"} ${pid}`} ${(used / units).toFixed(2)}`;
    });
    costs.push(`client ${((client.user + client.system) / 1000 / units).toFixed(2)}`);
    console.log(`${label} load ${load}: ${result}; CPU ms per ${WORK === "redis" ? "1000 requests" : "MB"}: ${costs.join(", ")}`);
  } finally {
    while (stops.length > 0) await stops.pop()!().catch(() => {});
  }
}

console.log(
  `${PATH}, ${WORK === "redis" ? `redis-benchmark GET and SET, ${REQUESTS} requests each at 50 clients` : `${BYTES / 1024 ** 2} MiB ${WORK}`}${AB_TREE ? `; A = ${AB_TREE}, B = this checkout` : ""}`,
);
if (!AB_TREE) await run(ROOT, "this checkout");
else {
  for (let pair = 1; pair <= PAIRS; pair++) {
    await run(AB_TREE, "A");
    await run(ROOT, "B");
  }
}
