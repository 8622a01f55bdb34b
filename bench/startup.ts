// Agent startup: time from spawning the agent to its "tunnel ... is up" line, against a relay
// that is already running, for each runtime, interleaved (node bun deno node bun deno ...)
// because this machine is noisy. Goal (issue 3): under 1 s on each runtime.
import { AgentProcess, type RuntimeName, tunnelArgs } from "../test/_agent.ts";
import { Origin } from "../test/_origin.ts";
import { Relay } from "../test/_relay.ts";

const RUNTIMES: RuntimeName[] = ["node", "bun", "deno"];

export interface StartupResult {
  runtime: RuntimeName;
  runs: number;
  medianMs: number;
  p90Ms: number;
  minMs: number;
  maxMs: number;
}

export async function measureStartup(runs: number): Promise<StartupResult[]> {
  const [relay, origin] = await Promise.all([Relay.start(), Origin.start()]);
  const samples = new Map<RuntimeName, number[]>(RUNTIMES.map((r) => [r, []]));
  try {
    for (let i = 0; i < runs + 1; i++) {
      for (const runtime of RUNTIMES) {
        const started = performance.now();
        const agent = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay));
        const elapsed = performance.now() - started;
        await agent.stop("SIGINT");
        if (i > 0) samples.get(runtime)!.push(elapsed); // the first round warms caches (Deno's, the disk's)
      }
    }
  } finally {
    await relay.dispose();
    await origin.close();
  }
  return RUNTIMES.map((runtime) => {
    const sorted = samples.get(runtime)!.sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
    return { runtime, runs, medianMs: at(0.5), p90Ms: at(0.9), minMs: sorted[0]!, maxMs: sorted.at(-1)! };
  });
}
