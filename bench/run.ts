// `npm run bench`: Burrow against direct access, one nginx hop, the Durable Object floor and two
// peer tunnels (localtunnel, tunnelmole; bench/_peers.ts), in one run on this machine, variants
// interleaved (A B C D A B C D) because the machine is noisy. Burrow runs on the Cloudflare relay
// (wrangler dev, workerd serve) and on the self-hosted relay (`agent relay` on Node, Bun and Deno,
// with the Node agent). Prints tables, issue 13's goals, issue 22's (bench/_goals.ts), and
// writes the figures as JSON under bench/results/ and the package's size into docs/benchmarks.md.
// Environment: BENCH_ROUNDS (2), BENCH_BYTES (1 GiB), BENCH_SECONDS (5 per load run), BENCH_RUNS
// (10 startups per runtime), BURROW_PEERS (the peers folder, ../shared/peers beside the clone),
// PEERS_ROOT (their built trees, /tmp/peers), BENCH_ONLY (variants by id, comma-separated, e.g.
// "direct,nginx,floor-workerd,node-workerd": an A/B of a few; startup and package size are then
// left out), BENCH_AB_TREE (another checkout, e.g. a worktree at the commit before a change: its
// relay on workerd with this checkout's Node agent, beside node-workerd in the same rounds).
// Then, with the HTTP variants stopped, the TCP section (bench/_tcp.ts): TCP paths to redis-server
// and a byte service, ids tcp-direct, tcp-ssh, tcp-workerd, tcp-selfhost-node in BENCH_ONLY;
// BENCH_TCP_REQUESTS (200000 per redis-benchmark test), BENCH_BYTES each way.

import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { memory, sampleRss } from "../test/_memory.ts";
import { ROOT } from "../test/_relay.ts";
import { selfhostGoals } from "./_goals.ts";
import { download, echo, firstEvent, type Load, load, median, sequential, upload } from "./_measure.ts";
import type { PeerName } from "./_peers.ts";
import { runTcp } from "./_tcp.ts";
import { BYTES, HTTP_WANTED, ONLY, setUp, type Variant } from "./_variants.ts";
import { measurePackage, writePackageSize } from "./package-size.ts";
import { measureStartup, printStartup } from "./startup.ts";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
/** The size localtunnel's transfers fall back to when BENCH_BYTES fails through it. */
const PEER_FALLBACK_BYTES = 64 * 1024 ** 2;
/** How long a transfer through a peer may take before it counts as failed (the others: 20 s over their own length). */
const PEER_TRANSFER_TIMEOUT_MS = 120_000;
/** What the bench's upload sends (recorded in the JSON, printed under the table). */
const UPLOADS = {
  client: "node:http",
  expectContinue: false,
  note: "uploads: node:http with Content-Length, without Expect: 100-continue (workerd never answers it: docs/known-limits.md)",
};

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
const MiB = 1024 ** 2;
const stops: (() => Promise<unknown>)[] = [];
/** Lines printed under the first table: what the peers' figures mean, and any peer left out. */
const footnotes: string[] = [];

/** `run()` with a time limit. */
function bounded<T>(run: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([run, limit]).finally(() => clearTimeout(timer));
}

/**
 * One figure. Burrow and the references must measure (an error fails the bench); a peer's figure
 * that fails is NaN ("-"), its error kept, and not tried again in later rounds.
 */
async function figure<T>(variant: Variant, what: string, run: () => Promise<T>, failed: T): Promise<T> {
  if (variant.kind !== "peer") return run();
  if (variant.failed.has(what)) return failed;
  try {
    const limit = what === "download" || what === "upload" ? PEER_TRANSFER_TIMEOUT_MS : SECONDS * 1000 + 20_000;
    return await bounded(run(), limit);
  } catch (error) {
    variant.failed.set(what, (error as Error).message);
    return failed;
  }
}

/** A transfer at the variant's size; for a peer that fails at BENCH_BYTES, once more (and from then on) at 64 MiB. */
async function transfer(variant: Variant, what: "download" | "upload"): Promise<number> {
  if (variant.bytes === 0) return Number.NaN;
  const run = () => (what === "download" ? download : upload)(variant.target, variant.bytes);
  const result = await figure(variant, what, run, Number.NaN);
  if (variant.kind === "peer" && Number.isNaN(result) && variant.bytes > PEER_FALLBACK_BYTES) {
    footnotes.push(
      `${variant.name}: a ${what} of ${BYTES / MiB} MiB failed (${variant.failed.get(what)}): its transfers are at ${PEER_FALLBACK_BYTES / MiB} MiB from then on`,
    );
    variant.failed.delete(what);
    variant.bytes = PEER_FALLBACK_BYTES;
    return transfer(variant, what);
  }
  return result;
}

async function measure(variant: Variant): Promise<Sample> {
  const { target } = variant;
  const relayPeak = variant.relayPids ? sampleRss(variant.relayPids) : undefined;
  const none: Load = { rps: Number.NaN, p50: Number.NaN, p99: Number.NaN, errors: 0 };
  const c1 = await figure(variant, "c1", () => sequential(target, SECONDS), none);
  const c50 = await figure(variant, "c50", () => load(target, 50, SECONDS), none);
  const downMBps = await transfer(variant, "download");
  const upMBps = await transfer(variant, "upload");
  const echoMs = await figure(variant, "ws echo", () => echo(target, 200), Number.NaN);
  const firstEventMs = await figure(variant, "first SSE", () => firstEvent(target, 50), Number.NaN);
  const relayPeakMB = relayPeak ? relayPeak.stop() / MB : undefined;
  return { c1, c50, downMBps, upMBps, echoMs, firstEventMs, relayPeakMB };
}

/** The median of each figure over the rounds (NaN: a figure a peer could not give). */
function summarize(samples: Sample[]) {
  const m = (pick: (s: Sample) => number) => median(samples.map(pick).filter((n) => !Number.isNaN(n)));
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

let stopping: Promise<void> = Promise.resolve();
/**
 * Stops everything started so far, in reverse order (between the HTTP and the TCP sections, at
 * the bench's end, on a failure, or on Ctrl-C); calls queue, so each part is stopped once.
 */
function stopAll(): Promise<void> {
  stopping = stopping.then(async () => {
    while (stops.length > 0) await stops.pop()!().catch(() => {});
  });
  return stopping;
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    console.log(`\n${signal}: stopping the relays, agents and peers...`);
    void stopAll().then(() => process.exit(130));
  });
}

/** "1.23 met" / "0.45 MISSED" for a ratio and whether it meets its goal; "-" when a figure is missing. */
function verdict(ratio: number, met: boolean): { text: string; value: number; met: boolean | null } {
  if (Number.isNaN(ratio)) return { text: "-", value: ratio, met: null };
  return { text: `${fixed(ratio, 2)} ${met ? "met" : "MISSED"}`, value: ratio, met };
}

try {
  if (HTTP_WANTED) {
    console.log(`setting up: origin, nginx, DO floor and Burrow relays on wrangler dev and workerd serve, agents, peers...`);
  }
  const variants = await setUp(stops, footnotes);
  const baselines = new Map(variants.map((v) => [v.name, { rss: v.relayPids?.().reduce((s, p) => s + memory(p).rss, 0) ?? 0 }]));
  const samples = new Map<string, Sample[]>(variants.map((v) => [v.name, []]));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const variant of variants) {
      process.stdout.write(`round ${round}/${ROUNDS}: ${variant.name}... `);
      const sample = await measure(variant);
      samples.get(variant.name)!.push(sample);
      console.log(
        `c1 p50 ${fixed(sample.c1.p50, 2)} ms, ${fixed(sample.c50.rps)} req/s at c50, ${fixed(sample.downMBps)} MB/s down, ${fixed(sample.upMBps)} MB/s up`,
      );
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
  const direct = byName.get("direct");
  const nginx = byName.get("nginx");
  const peerResult = (name: PeerName) => results.find((r) => r.peer === name);
  const lt = peerResult("localtunnel");
  const tm = peerResult("tunnelmole");

  // What the peers' figures mean (their limits, README of the peers folder), and what failed.
  if (lt)
    footnotes.push(
      "localtunnel: at most 10 requests in flight (10 sockets per client; its --max-sockets is broken): its c50 is what that gives",
    );
  if (tm) {
    footnotes.push(
      'tunnelmole: buffers every request and response whole (downloads crawl, responses over ~78 MB kill its client, bodies over 100 KiB get 413): small requests only, transfers "-"',
    );
  }
  for (const r of results) for (const [what, error] of r.failed) footnotes.push(`${r.name}: ${what} "-": ${error}`);
  footnotes.push(UPLOADS.note);

  const sizes = [...new Set(results.filter((r) => r.bytes > 0).map((r) => r.bytes / MiB))].join(" or ");
  // BENCH_ONLY with TCP paths only: no HTTP tables.
  if (results.length > 0) {
    console.log(`\nmedians of ${ROUNDS} rounds; ${sizes} MiB transfers; load runs of ${SECONDS}s (autocannon)`);
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
    for (const note of footnotes) console.log(`- ${note}`);
  }

  if (results.length > 0) console.log("\nratios (Burrow / reference); the DO floor is the one on the same launcher");
  const ratios = results
    .filter((r) => r.kind === "burrow" || r.kind === "selfhost")
    .map((r) => {
      // With BENCH_ONLY, a reference may be missing: its ratios are "-".
      const floor = byName.get(`DO floor (${r.launcher})`) ?? summarize([]);
      return {
        variant: r.name,
        "c50 req/s vs direct": direct ? fixed(r.c50rps / direct.c50rps, 2) : "-",
        "c50 req/s vs nginx": nginx ? fixed(r.c50rps / nginx.c50rps, 2) : "-",
        "c50 req/s vs floor": fixed(r.c50rps / floor.c50rps, 2),
        "c50 vs localtunnel": lt ? fixed(r.c50rps / lt.c50rps, 2) : "-",
        "c50 vs tunnelmole": tm ? fixed(r.c50rps / tm.c50rps, 2) : "-",
        "c1 vs floor": fixed(r.c1rps / floor.c1rps, 2),
        "c1 p50 over floor ms": fixed(r.c1p50 - floor.c1p50, 2),
        "down vs floor": fixed(r.downMBps / floor.downMBps, 2),
        "up MB/s": fixed(r.upMBps),
      };
    });
  if (results.length > 0) console.table(ratios);

  // Issue 13's goals, against the floor on the same launcher and the peers of this run. The
  // workerd variants are the goals; the wrangler one is shown for information.
  const goals = results
    .filter((r) => r.kind === "burrow" && byName.has(`DO floor (${r.launcher})`))
    .map((r) => {
      const floor = byName.get(`DO floor (${r.launcher})`)!;
      const ahead = (peer: typeof lt, pick: (x: NonNullable<typeof lt>) => number) =>
        peer ? verdict(pick(r) / pick(peer), pick(r) > pick(peer)) : { text: "no peer", value: Number.NaN, met: null };
      const added = r.c1p50 - floor.c1p50;
      const checks = {
        "c50/floor >=0.6": verdict(r.c50rps / floor.c50rps, r.c50rps >= 0.6 * floor.c50rps),
        "c50/lt >1": ahead(lt, (x) => x.c50rps),
        "c50/tm >1": ahead(tm, (x) => x.c50rps),
        "c1/floor >=0.5": verdict(r.c1rps / floor.c1rps, r.c1rps >= 0.5 * floor.c1rps),
        "c1/lt >1": ahead(lt, (x) => x.c1rps),
        "c1/tm >1": ahead(tm, (x) => x.c1rps),
        "c1 added ms <0.5": { text: `+${fixed(added, 2)} ${added < 0.5 ? "met" : "MISSED"}`, value: added, met: added < 0.5 },
        "down/floor >=0.5": verdict(r.downMBps / floor.downMBps, r.downMBps >= 0.5 * floor.downMBps),
        "down/lt >1": ahead(lt, (x) => x.downMBps),
        "up/lt >1": ahead(lt, (x) => x.upMBps),
      };
      const judged = Object.values(checks).filter((c) => c.met !== null);
      return {
        variant: r.name,
        launcher: r.launcher!,
        informational: r.launcher !== "workerd",
        checks,
        met: `${judged.filter((c) => c.met).length}/${judged.length}`,
        agentPeakMB: r.agentPeakMB,
        relayGrowthMB: r.relayGrowthMB,
      };
    });
  if (goals.length > 0)
    console.log(
      "\ngoals (issue 13): c50 >= 0.6x the floor's and ahead of both peers; c1 req/s >= 0.5x the floor's and ahead of both, under 0.5 ms added over the floor's c1 p50; download >= 0.5x the floor's and ahead of localtunnel's, upload ahead of localtunnel's; memory compared with the previous run by eye",
    );
  if (goals.length > 0)
    console.table(
      goals.map((g) => ({
        variant: g.informational ? `${g.variant} (informational)` : g.variant,
        ...Object.fromEntries(Object.entries(g.checks).map(([goal, c]) => [goal, c.text])),
        "agent peak MB": fixed(g.agentPeakMB),
        "relay growth MB": fixed(g.relayGrowthMB),
        met: g.met,
      })),
    );
  if (results.length > 0 && (!lt || !tm))
    console.log(`- "no peer": ${[!lt && "localtunnel", !tm && "tunnelmole"].filter(Boolean).join(" and ")} not in this run`);

  const selfhosted = results.filter((r) => r.kind === "selfhost");
  const goalsSelfhost = selfhostGoals(selfhosted, { direct, nginx, peers: results.filter((r) => r.kind === "peer") });
  if (selfhosted.length > 0) {
    console.log(
      "\ngoals (issue 22, the self-hosted relay): c50 >= 2x the best peer's and >= 0.3x one nginx hop's; c1 p50 over direct's no more than localtunnel's; download >= 0.7x nginx's",
    );
    console.table(
      goalsSelfhost.map((g) => ({
        variant: g.variant,
        ...Object.fromEntries(Object.entries(g.checks).map(([goal, c]) => [goal, c.text])),
        met: g.met,
      })),
    );
  }

  // The HTTP variants' relays, agents and peers stop first: the TCP paths get the machine alone.
  await stopAll();
  const tcp = await runTcp(stops, ROUNDS);

  // An A/B of a few variants (BENCH_ONLY) leaves startup and the package's size to a full run.
  const startup = ONLY ? undefined : await measureStartup(Number(process.env.BENCH_RUNS ?? 10));
  if (startup) printStartup(startup);
  const packageSize = ONLY ? undefined : measurePackage();
  if (packageSize) {
    writePackageSize(packageSize);
    console.log("package size written to docs/benchmarks.md");
  }

  const dir = join(ROOT, "bench/results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replaceAll(":", "-")}.json`);
  const machine = { cpus: cpus().length, model: cpus()[0]?.model, node: process.versions.node };
  const clean = results.map(({ agentPid: _a, relayPids: _r, failed, ...rest }) => ({
    ...rest,
    failed: Object.fromEntries(failed),
  }));
  const raw = Object.fromEntries(samples);
  const uploads = { client: UPLOADS.client, expectContinue: UPLOADS.expectContinue };
  writeFileSync(
    file,
    `${JSON.stringify({ date: new Date().toISOString(), machine, only: ONLY, rounds: ROUNDS, bytes: BYTES, uploads, footnotes, results: clean, ratios, goals, goalsOf: "issue 13", goalsSelfhost, tcp, startup, packageSize, raw }, null, 2)}\n`,
  );
  console.log(`\nwrote ${file}`);
} finally {
  await stopAll();
}
