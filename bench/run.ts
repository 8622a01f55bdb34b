// `npm run bench`: Burrow against direct access, one nginx hop and the Durable Object floor, in
// one run on this machine, variants interleaved (A B C D A B C D) because the machine is noisy.
// Prints tables and writes the figures as JSON under bench/results/.
// Environment: BENCH_ROUNDS (2), BENCH_BYTES (1 GiB), BENCH_SECONDS (5 per load run), BENCH_RUNS
// (10 startups per runtime).
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../test/_agent.ts";
import { command, memory, processTree, sampleRss } from "../test/_memory.ts";
import { Child } from "../test/_process.ts";
import { Relay, ROOT } from "../test/_relay.ts";
import { download, echo, firstEvent, type Load, load, median, sequential, type Target, upload } from "./_measure.ts";
import { startNginx } from "./_nginx.ts";
import { measureStartup, printStartup } from "./startup.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const BYTES = Number(process.env.BENCH_BYTES ?? 1024 ** 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
type Launcher = "wrangler" | "workerd";

interface Variant {
  name: string;
  kind: "direct" | "nginx" | "floor" | "burrow";
  launcher?: Launcher;
  runtime?: RuntimeName;
  target: Target;
  /** Processes whose memory is reported: the agent, and the relay's workerd. */
  agentPid?: () => number;
  relayPids?: () => number[];
}

interface Sample {
  c1: Load;
  c50: Load;
  downMBps: number;
  upMBps: number;
  echoMs: number;
  firstEventMs: number;
  relayPeakMB?: number;
}

const MB = 1e6;
const stops: (() => Promise<unknown>)[] = [];

async function setUp(): Promise<Variant[]> {
  const origin = new Child("origin", process.execPath, [join(ROOT, "bench/_origin.js")], { cwd: ROOT });
  stops.push(() => origin.stop());
  const originPort = Number((await origin.waitFor(/^listening (\d+)/))[1]);
  const local = (port: number): Target => ({ base: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` });
  const variants: Variant[] = [{ name: "direct", kind: "direct", target: local(originPort) }];

  const nginx = await startNginx(originPort);
  if (nginx) {
    stops.push(nginx.stop);
    variants.push({ name: "nginx", kind: "nginx", target: local(nginx.port) });
  }
  const workerdOf = (relay: Relay) => () => processTree(relay.pid).filter((pid) => command(pid) === "workerd");
  for (const launcher of ["wrangler", "workerd"] as const) {
    const floor = await Relay.start({ launcher, config: join(ROOT, "bench/floor/wrangler.toml") });
    stops.push(() => floor.dispose());
    variants.push({
      name: `DO floor (${launcher})`,
      kind: "floor",
      launcher,
      target: local(floor.port),
      relayPids: workerdOf(floor),
    });
  }
  const plan: [RuntimeName, Launcher, "websocket" | "https"][] = [
    ["node", "wrangler", "websocket"],
    ["node", "workerd", "websocket"],
    ["bun", "workerd", "websocket"],
    ["deno", "workerd", "websocket"],
    ["node", "workerd", "https"],
  ];
  for (const [runtime, launcher, transport] of plan) {
    // One relay per agent, so that each relay's memory is its own tunnel's.
    const relay = await Relay.start({ launcher });
    stops.push(() => relay.dispose());
    const agent = await AgentProcess.start(runtime, [
      ...tunnelArgs(originPort, relay, `bench-${runtime}-${transport}`),
      "--transport",
      transport,
    ]);
    stops.push(() => agent.stop("SIGINT"));
    const url = new URL(agent.url);
    variants.push({
      name: `Burrow ${runtime}${transport === "https" ? " https" : ""} (${launcher})`,
      kind: "burrow",
      launcher,
      runtime,
      target: { base: `http://127.0.0.1:${url.port}`, host: url.host },
      agentPid: () => agent.runtimePid,
      relayPids: workerdOf(relay),
    });
  }
  return variants;
}

async function measure(variant: Variant): Promise<Sample> {
  const { target } = variant;
  const relayPeak = variant.relayPids ? sampleRss(variant.relayPids) : undefined;
  const c1 = await sequential(target, SECONDS);
  const c50 = await load(target, 50, SECONDS);
  const downMBps = await download(target, BYTES);
  const upMBps = await upload(target, BYTES);
  const echoMs = await echo(target, 200);
  const firstEventMs = await firstEvent(target, 50);
  const relayPeakMB = relayPeak ? relayPeak.stop() / MB : undefined;
  return { c1, c50, downMBps, upMBps, echoMs, firstEventMs, relayPeakMB };
}

/** The median of each figure over the rounds. */
function summarize(samples: Sample[]) {
  const m = (pick: (s: Sample) => number) => median(samples.map(pick));
  return {
    c1rps: m((s) => s.c1.rps),
    c1p50: m((s) => s.c1.p50),
    c1p99: m((s) => s.c1.p99),
    c50rps: m((s) => s.c50.rps),
    c50p50: m((s) => s.c50.p50),
    c50p99: m((s) => s.c50.p99),
    downMBps: m((s) => s.downMBps),
    upMBps: m((s) => s.upMBps),
    echoMs: m((s) => s.echoMs),
    firstEventMs: m((s) => s.firstEventMs),
    errors: samples.reduce((sum, s) => sum + s.c1.errors + s.c50.errors, 0),
  };
}

const fixed = (n: number | undefined, digits = 0) => (n === undefined || Number.isNaN(n) ? "-" : n.toFixed(digits));

try {
  console.log(`setting up: origin, nginx, DO floor and Burrow relays on wrangler dev and workerd serve, agents...`);
  const variants = await setUp();
  const baselines = new Map(variants.map((v) => [v.name, { rss: v.relayPids?.().reduce((s, p) => s + memory(p).rss, 0) ?? 0 }]));
  const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const variant of variants) {
      process.stdout.write(`round ${round}/${ROUNDS}: ${variant.name}... `);
      const sample = await measure(variant);
      samples.get(variant.name)!.push(sample);
      console.log(`${fixed(sample.c50.rps)} req/s at c50, ${fixed(sample.downMBps)} MB/s down, ${fixed(sample.upMBps)} MB/s up`);
    }
  }

  const results = variants.map((v) => {
    const s = summarize(samples.get(v.name)!);
    const relayPeak = Math.max(...samples.get(v.name)!.map((x) => x.relayPeakMB ?? 0));
    const relayGrowthMB = v.relayPids ? relayPeak - baselines.get(v.name)!.rss / MB : undefined;
    const agentPeakMB = v.agentPid ? memory(v.agentPid()).peak / MB : undefined;
    return { ...v, ...s, relayGrowthMB, agentPeakMB };
  });
  const byName = new Map(results.map((r) => [r.name, r]));
  const direct = byName.get("direct")!;
  const nginx = byName.get("nginx");

  console.log(`\nmedians of ${ROUNDS} rounds; ${BYTES / 1024 ** 2} MiB transfers; load runs of ${SECONDS}s (autocannon)`);
  console.table(
    results.map((r) => ({
      variant: r.name,
      "c1 req/s": fixed(r.c1rps),
      "c1 p50 ms": fixed(r.c1p50, 2),
      "c1 p99 ms": fixed(r.c1p99, 2),
      "c50 req/s": fixed(r.c50rps),
      "c50 p50 ms": fixed(r.c50p50, 1),
      "c50 p99 ms": fixed(r.c50p99, 1),
      "down MB/s": fixed(r.downMBps),
      "up MB/s": fixed(r.upMBps),
      "ws echo ms": fixed(r.echoMs, 2),
      "1st SSE ms": fixed(r.firstEventMs, 2),
      "agent peak MB": fixed(r.agentPeakMB),
      "relay growth MB": fixed(r.relayGrowthMB),
      errors: r.errors,
    })),
  );

  console.log("\nratios (Burrow / reference); the DO floor is the one on the same launcher");
  const ratios = results
    .filter((r) => r.kind === "burrow")
    .map((r) => {
      const floor = byName.get(`DO floor (${r.launcher})`)!;
      return {
        variant: r.name,
        "c50 req/s vs direct": fixed(r.c50rps / direct.c50rps, 2),
        "c50 req/s vs nginx": nginx ? fixed(r.c50rps / nginx.c50rps, 2) : "-",
        "c50 req/s vs floor": fixed(r.c50rps / floor.c50rps, 2),
        "c1 p50 over floor ms": fixed(r.c1p50 - floor.c1p50, 2),
        "down vs floor": fixed(r.downMBps / floor.downMBps, 2),
        "up MB/s": fixed(r.upMBps),
      };
    });
  console.table(ratios);

  const goals = results
    .filter((r) => r.kind === "burrow")
    .flatMap((r) => {
      const floor = byName.get(`DO floor (${r.launcher})`)!;
      const checks = [
        [`c50 throughput >= 60% of the floor`, r.c50rps / floor.c50rps >= 0.6, `${fixed((100 * r.c50rps) / floor.c50rps)}%`],
        [`c1 p50 < 1 ms over the floor`, r.c1p50 - floor.c1p50 < 1, `+${fixed(r.c1p50 - floor.c1p50, 2)} ms`],
        [`download >= 50% of the floor's`, r.downMBps / floor.downMBps >= 0.5, `${fixed((100 * r.downMBps) / floor.downMBps)}%`],
      ] as [string, boolean, string][];
      if (r.launcher === "workerd") checks.push([`upload >= 120 MB/s`, r.upMBps >= 120, `${fixed(r.upMBps)} MB/s`]);
      return checks.map(([goal, met, value]) => ({ variant: r.name, goal, value, met: met ? "met" : "MISSED" }));
    });
  console.log("\ngoals (issue 4)");
  console.table(goals);

  const startup = await measureStartup(Number(process.env.BENCH_RUNS ?? 10));
  printStartup(startup);

  const dir = join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replaceAll(":", "-")}.json`);
  const machine = { cpus: cpus().length, model: cpus()[0]?.model, node: process.versions.node };
  const clean = results.map(({ agentPid: _a, relayPids: _r, ...rest }) => rest);
  const raw = Object.fromEntries(samples);
  writeFileSync(
    file,
    `${JSON.stringify({ date: new Date().toISOString(), machine, rounds: ROUNDS, bytes: BYTES, results: clean, ratios, goals, startup, raw }, null, 2)}\n`,
  );
  console.log(`\nwrote ${file}`);
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {});
}
