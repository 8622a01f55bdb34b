import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Origin } from "../_origin.ts";
import { Child, freePort } from "../_process.ts";
import { ROOT } from "../_relay.ts";
import { visit } from "../_visit.ts";
import { codeBlocks } from "../docs/_markdown.ts";

// The README's quick start, walked as a newcomer would: a fresh `git clone` of this repository,
// then the commands of the README's first code block, run by a shell in the clone, until the
// URL the agent prints answers. Two things differ from a newcomer's machine, to keep the test
// fast, offline and free of port clashes:
// - node_modules: the clone gets a copy of this clone's (cp -a: the lockfile is the same, and
//   the workspace links are relative, so they point into the new clone), and `npm install`
//   runs with npm_config_offline, so it checks the tree against the lockfile and fetches
//   nothing. A networked `npm ci` takes minutes on this machine and needs the registry.
// - ports: the server the README puts on 8000 is the test's origin on a free port (the
//   commands' `8000` is replaced by it), and BURROW_RELAY_PORT moves the relay off 8787.
describe("the README's quick start, from a fresh clone", () => {
  let clone: string;
  let origin: Origin;
  let dev: Child | undefined;

  beforeAll(async () => {
    clone = join(mkdtempSync(join(tmpdir(), "burrow-quickstart-")), "burrow");
    execFileSync("git", ["clone", "--quiet", ROOT, clone], { stdio: "ignore" });
    execFileSync("cp", ["-a", join(ROOT, "node_modules"), join(clone, "node_modules")]);
    origin = await Origin.start();
  }, 120_000);

  afterAll(async () => {
    await dev?.stop("SIGINT");
    await origin?.close();
    if (clone) rmSync(join(clone, ".."), { recursive: true, force: true });
  });

  it("opens a tunnel whose URL answers, with the two commands it shows", { timeout: 180_000 }, async () => {
    const [first] = codeBlocks("README.md", clone).filter((block) => block.lang === "sh");
    const commands = first!.text.split("\n").filter((line) => line.trim() && !line.startsWith("#"));
    expect(commands).toEqual(["npm install", "npm run dev -- --port 8000"]);
    const relayPort = await freePort();
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_") && !key.startsWith("npm_"))),
      BURROW_RELAY_PORT: String(relayPort),
      npm_config_offline: "true",
      npm_config_audit: "false",
      npm_config_fund: "false",
      WRANGLER_SEND_METRICS: "false",
      NO_COLOR: "1",
    };
    const run = (line: string) =>
      new Child(`quickstart: ${line}`, "sh", ["-c", line.replaceAll("8000", String(origin.port))], { cwd: clone, env });
    for (const line of commands.slice(0, -1)) {
      const step = run(line);
      expect(await step.exited, step.output).toBe(0);
    }
    dev = run(commands.at(-1)!);
    const url = (await dev.waitFor(/tunnel \S+ is up: (\S+) -> /, { timeoutMs: 90_000 }))[1]!;
    expect(url).toMatch(new RegExp(`^http://[a-z0-9-]+\\.localhost:${relayPort}$`));
    const response = await visit(`${url}/status/204`);
    expect(response.status).toBe(204);
  });
});
