// `npm run bench`: Burrow's measurements on this machine. Prints a table and writes the
// figures as JSON under bench/results/.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { ROOT } from "../test/_relay.ts";
import { measureStartup } from "./startup.ts";

const runs = Number(process.env.BENCH_RUNS ?? 10);

console.log(`agent startup to ready line, ${runs} runs per runtime, interleaved (goal: under 1000 ms)`);
const startup = await measureStartup(runs);
console.table(
  startup.map((r) => ({
    runtime: r.runtime,
    "median ms": Math.round(r.medianMs),
    "p90 ms": Math.round(r.p90Ms),
    "min ms": Math.round(r.minMs),
    "max ms": Math.round(r.maxMs),
    goal: r.p90Ms < 1000 ? "met" : "missed",
  })),
);

const dir = join(ROOT, "bench/results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `bench-${new Date().toISOString().replaceAll(":", "-")}.json`);
const machine = { cpus: cpus().length, model: cpus()[0]?.model, node: process.versions.node };
writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), machine, startup }, null, 2)}\n`);
console.log(`wrote ${file}`);
