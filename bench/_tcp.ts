// The bench's TCP section (run.ts runs it after the HTTP variants, those stopped): each TCP path
// (bench/_tcp-paths.ts) to a real redis-server, measured with redis-benchmark (GET and SET at 50
// clients, BENCH_TCP_REQUESTS each), and to a byte service (bench/_tcp-origin.js), BENCH_BYTES
// each way; paths interleaved round by round, medians printed with ratios against `ssh -L`
// and the TCP goals (bench/_goals.ts).
import { join } from "node:path";
import { sampleRss } from "../test/_memory.ts";
import { Child } from "../test/_process.ts";
import { ROOT } from "../test/_relay.ts";
import { findProgram, redisBenchmark, startRedis } from "../test/_services.ts";
import { tcpGoals } from "./_goals.ts";
import { median } from "./_measure.ts";
import { tcpDownload, tcpUpload } from "./_tcp-measure.ts";
import { TCP_PATHS, type TcpPath, type TcpPathPlan } from "./_tcp-paths.ts";
import { BYTES, ONLY } from "./_variants.ts";

const REQUESTS = Number(process.env.BENCH_TCP_REQUESTS ?? 200_000);
/** redis-benchmark's own default, and the HTTP section's c50. */
const CLIENTS = 50;
const MB = 1e6;

interface Sample {
  getOps: number;
  setOps: number;
  downMBps: number;
  upMBps: number;
  errors: number;
  peakMB?: number;
}

interface Ready {
  plan: TcpPathPlan;
  redis: TcpPath;
  bytes: TcpPath;
}

const fixed = (n: number | undefined, digits = 0) => (n === undefined || Number.isNaN(n) ? "-" : n.toFixed(digits));

/** Whether the TCP path `id` runs: every one without BENCH_ONLY. */
const wanted = (id: string) => !ONLY || ONLY.includes(id);

/** Whether BENCH_ONLY leaves the TCP section anything to run. */
export const TCP_WANTED = TCP_PATHS.some((plan) => wanted(plan.id));

async function measure(path: Ready): Promise<Sample> {
  const pids = () => [...new Set([...(path.redis.pids?.() ?? []), ...(path.bytes.pids?.() ?? [])])];
  const peak = path.redis.pids || path.bytes.pids ? sampleRss(pids) : undefined;
  const redis = await redisBenchmark({
    port: path.redis.port,
    clients: CLIENTS,
    requests: REQUESTS,
    tests: "get,set",
    // At worst 1000 requests/s for each test: slower than that, the path is broken.
    timeoutMs: 60_000 + 2 * REQUESTS,
  });
  const downMBps = await tcpDownload(path.bytes.port, BYTES);
  const upMBps = await tcpUpload(path.bytes.port, BYTES);
  return {
    getOps: redis.opsPerSecond.GET ?? Number.NaN,
    setOps: redis.opsPerSecond.SET ?? Number.NaN,
    downMBps,
    upMBps,
    errors: redis.errors,
    peakMB: peak ? peak.stop() / MB : undefined,
  };
}

/**
 * Starts redis-server, the byte service and every wanted path, measures them for `rounds`
 * rounds and prints the tables; what it started is pushed onto `stops`.
 * @returns the figures for the results' JSON, or undefined when no TCP path was wanted or
 *   Redis is not installed.
 */
export async function runTcp(stops: (() => Promise<unknown>)[], rounds: number) {
  if (!TCP_WANTED) return undefined;
  const missing = ["redis-server", "redis-benchmark"].filter((name) => !findProgram(name));
  if (missing.length > 0) {
    console.warn(`\n${missing.join(", ")} not installed: the TCP section is left out (apt-get install redis-server redis-tools)`);
    return undefined;
  }
  console.log("\nTCP: setting up redis-server, the byte service and the paths...");
  const notes: string[] = [];
  const redis = await startRedis();
  stops.push(redis.stop);
  const origin = new Child("tcp origin", process.execPath, [join(ROOT, "bench/_tcp-origin.js")], { cwd: ROOT });
  stops.push(() => origin.stop());
  const bytesPort = Number((await origin.waitFor(/^listening (\d+)/))[1]);
  const ready: Ready[] = [];
  for (const plan of TCP_PATHS.filter((p) => wanted(p.id))) {
    const open = await plan.prepare(stops);
    if (typeof open === "string") {
      notes.push(`${plan.id}: left out: ${open}`);
      continue;
    }
    const redisPath = await open(redis.port);
    stops.push(redisPath.stop);
    const bytesPath = await open(bytesPort);
    stops.push(bytesPath.stop);
    ready.push({ plan, redis: redisPath, bytes: bytesPath });
  }

  const samples = new Map<string, Sample[]>(ready.map((r) => [r.plan.id, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const path of ready) {
      process.stdout.write(`round ${round}/${rounds}: ${path.plan.id}... `);
      const sample = await measure(path);
      samples.get(path.plan.id)!.push(sample);
      console.log(
        `GET ${fixed(sample.getOps)} ops/s, SET ${fixed(sample.setOps)} ops/s, ${fixed(sample.downMBps)} MB/s down, ${fixed(sample.upMBps)} MB/s up`,
      );
    }
  }

  const results = ready.map(({ plan }) => {
    const s = samples.get(plan.id)!;
    const m = (pick: (x: Sample) => number) => median(s.map(pick).filter((n) => !Number.isNaN(n)));
    const peaks = s.map((x) => x.peakMB).filter((n) => n !== undefined);
    return {
      id: plan.id,
      name: plan.name,
      getOps: m((x) => x.getOps),
      setOps: m((x) => x.setOps),
      downMBps: m((x) => x.downMBps),
      upMBps: m((x) => x.upMBps),
      peakMB: peaks.length > 0 ? Math.max(...peaks) : undefined,
      errors: s.reduce((sum, x) => sum + x.errors, 0),
    };
  });
  const ssh = results.find((r) => r.id === "tcp-ssh");

  console.log(
    `\nTCP paths: medians of ${rounds} rounds; redis-benchmark GET and SET, ${REQUESTS} requests each at ${CLIENTS} clients; ${BYTES / 1024 ** 2} MiB each way`,
  );
  if (results.length > 0) {
    console.table(
      results.map((r) => ({
        path: r.id,
        "GET ops/s": fixed(r.getOps),
        "SET ops/s": fixed(r.setOps),
        "down MB/s": fixed(r.downMBps),
        "up MB/s": fixed(r.upMBps),
        "path peak MB": fixed(r.peakMB),
        errors: r.errors,
      })),
    );
  }
  for (const note of notes) console.log(`- ${note}`);
  console.log("- path peak MB: the path's own processes (ssh and sshd; Burrow's agents and relay), none for direct");

  console.log("\nTCP ratios (path / ssh -L)");
  const ratios = results.map((r) => ({
    path: r.id,
    "GET vs ssh": ssh ? fixed(r.getOps / ssh.getOps, 2) : "-",
    "SET vs ssh": ssh ? fixed(r.setOps / ssh.setOps, 2) : "-",
    "down vs ssh": ssh ? fixed(r.downMBps / ssh.downMBps, 2) : "-",
    "up vs ssh": ssh ? fixed(r.upMBps / ssh.upMBps, 2) : "-",
  }));
  console.table(ratios);

  const goals = tcpGoals(results, ssh);
  console.log(
    "\ngoals (the TCP tunnel): Burrow through workerd >= 0.5x ssh -L, through the self-hosted relay >= 1.0x, on each figure",
  );
  if (goals.length > 0) {
    console.table(
      goals.map((g) => ({
        path: g.path,
        goal: g.goal,
        ...Object.fromEntries(Object.entries(g.checks).map(([name, c]) => [name, c.text])),
        met: g.met,
      })),
    );
  } else {
    console.log("- no Burrow path in this run");
  }

  return { requests: REQUESTS, clients: CLIENTS, bytes: BYTES, notes, results, ratios, goals, raw: Object.fromEntries(samples) };
}
