import { readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Origin } from "../_origin.ts";
import { Child } from "../_process.ts";
import { Relay, ROOT } from "../_relay.ts";
import { visit } from "../_visit.ts";

// The commands for running the agent from a clone (docs/development.md), as typed into a shell
// whose PATH has no node_modules/.bin (npm test adds it; a user's shell does not) and no
// global bun or deno.
const COMMANDS = [
  ["npx agent", /\(node /],
  ["npx bunx --bun agent", /\(bun /],
  ["npx deno task agent", /\(deno /],
] as const;

const PATH = (process.env.PATH ?? "")
  .split(delimiter)
  .filter((dir) => !dir.includes("node_modules"))
  .join(delimiter);

function shell(label: string, line: string): Child {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
  return new Child(label, "sh", ["-c", line], { cwd: ROOT, env: { ...env, PATH } });
}

describe("the agent commands of a clone (docs/development.md)", () => {
  let relay: Relay;
  let origin: Origin;
  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start(), Origin.start()]);
  });
  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it("are the ones docs/development.md shows", () => {
    const page = readFileSync(join(ROOT, "docs/development.md"), "utf8");
    for (const [command] of COMMANDS) expect(page).toContain(`${command} --port 8000`);
  });

  it.each(COMMANDS)("%s runs the agent on its runtime and opens a tunnel", async (command, runtime) => {
    const version = shell(command, `${command} --version`);
    expect(await version.exited).toBe(0);
    expect(version.output).toMatch(runtime);
    const agent = shell(command, `${command} --port ${origin.port} --relay ${relay.url}`);
    try {
      const url = (await agent.waitFor(/tunnel \S+ is up: (\S+)/, { timeoutMs: 30_000 }))[1]!;
      expect((await visit(`${url}/status/204`)).status).toBe(204);
    } finally {
      await agent.stop("SIGINT");
    }
  });
});
