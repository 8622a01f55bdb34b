// Agent startup: time from spawning the agent to its "tunnel ... is up" line, against a relay
// that is already running, for each runtime from the sources, the installed package under Node
// and the executable, interleaved (a b c d e a b c d e ...) because this machine is noisy.
// Goals: under 1 s on each runtime (issue 3); under 150 ms for the packaged Node agent (issue 9).
// `npm run bench:startup` runs only this part (BENCH_RUNS, 10 by default).
import { rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { pathToFileURL } from "node:url";
import { AgentProcess, type AgentRuntime, tunnelArgs } from "../test/_agent.ts";
import { Origin } from "../test/_origin.ts";
import { buildExecutable, executableLauncher, installPackage, packageNodeLauncher } from "../test/_package.ts";
import { Relay } from "../test/_relay.ts";

export interface StartupResult {
  runtime: string;
  runs: number;
  medianMs: number;
  p90Ms: number;
  minMs: number;
  maxMs: number;
}

export interface StartupReport {
  results: StartupResult[];
  /** Bytes the installed package takes under node_modules/, and the executable's size. */
  installedBytes: number;
  executableBytes: number;
}

export async function measureStartup(runs: number): Promise<StartupReport> {
  const [relay, origin, installed, executable] = await Promise.all([
    Relay.start(),
    Origin.start(),
    installPackage(),
    buildExecutable(),
  ]);
  const alone = executableLauncher(executable);
  const variants: [string, AgentRuntime][] = [
    ["node (sources)", "node"],
    ["bun (sources)", "bun"],
    ["deno (sources)", "deno"],
    ["node (package)", packageNodeLauncher(installed.project)],
    ["executable", alone],
  ];
  const samples = new Map<string, number[]>(variants.map(([label]) => [label, []]));
  try {
    for (let i = 0; i < runs + 1; i++) {
      for (const [label, runtime] of variants) {
        const started = performance.now();
        const agent = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay));
        const elapsed = performance.now() - started;
        await agent.stop("SIGINT");
        if (i > 0) samples.get(label)!.push(elapsed); // the first round warms caches (Deno's, the disk's)
      }
    }
  } finally {
    await relay.dispose();
    await origin.close();
  }
  const { size } = statSync(executable);
  for (const dir of [dirname(installed.tarball), dirname(executable), alone.cwd]) rmSync(dir, { recursive: true, force: true });
  const results = variants.map(([label]) => {
    const sorted = samples.get(label)!.sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    return { runtime: label, runs, medianMs: at(0.5), p90Ms: at(0.9), minMs: sorted[0]!, maxMs: sorted.at(-1)! };
  });
  return { results, installedBytes: installed.installedBytes, executableBytes: size };
}

/** Prints a report as `npm run bench` does. */
export function printStartup(report: StartupReport): void {
  console.log(
    `\nagent startup to ready line, ${report.results[0]?.runs} runs each (goals: under 1000 ms; the packaged Node agent under 150 ms)`,
  );
  console.table(
    report.results.map((r) => ({
      runtime: r.runtime,
      "median ms": Math.round(r.medianMs),
      "p90 ms": Math.round(r.p90Ms),
      "max ms": Math.round(r.maxMs),
    })),
  );
  const MB = 1e6;
  console.log(
    `package installed: ${(report.installedBytes / MB).toFixed(2)} MB (goal: under 10 MB); executable: ${(report.executableBytes / MB).toFixed(0)} MB`,
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  printStartup(await measureStartup(Number(process.env.BENCH_RUNS ?? 10)));
}
