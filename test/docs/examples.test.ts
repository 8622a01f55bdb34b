import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parse } from "smol-toml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand, type Launcher } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Relay } from "../_relay.ts";
import { codeBlocks, pages } from "./_markdown.ts";

// Every burrow.toml in the docs, run as a user would: written to burrow.toml in an empty
// folder and read by a real agent started there, against a real relay. Paths the example names
// relative to the file (a folder to serve, a CA to trust) are made first; the relay's URL and
// the token file come from the command line, which overrides the file.
const EXAMPLES = pages().flatMap((page) => codeBlocks(page).filter((block) => block.lang === "toml"));

/** Relative paths of an example's path keys, made before the agent reads it. */
const DIR_KEYS = ["dir"];
const PEM_KEYS = ["origin-ca", "ca"];
/** A TCP tunnel's key file: one key made for the example. */
const KEY_FILE_KEYS = ["connect-key-file"];

function selfSignedPem(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const key = `${path}.key`;
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"].concat([
      "-subj",
      "/CN=burrow-docs-example",
      "-days",
      "1",
      "-keyout",
      key,
      "-out",
      path,
    ]),
    { stdio: "ignore" },
  );
}

describe("the docs' burrow.toml examples", () => {
  let relay: Relay;
  let origin: Origin;
  const dirs: string[] = [];
  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start(), Origin.start()]);
  });
  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("finds the examples", () => {
    expect(EXAMPLES.map((block) => block.page)).toEqual(expect.arrayContaining(["README.md", "docs/agent.md"]));
  });

  it.each(EXAMPLES.map((block) => [`${block.page} line ${block.line}`, block] as const))(
    "%s opens every tunnel it names",
    async (_where, block) => {
      const dir = mkdtempSync(join(tmpdir(), "burrow-docs-example-"));
      dirs.push(dir);
      const data = parse(block.text) as Record<string, unknown>;
      const tables = (data.tunnel as Record<string, unknown>[] | undefined) ?? [];
      for (const table of [data, ...tables]) {
        for (const [key, value] of Object.entries(table)) {
          if (typeof value !== "string" || value.startsWith("/")) continue;
          if (DIR_KEYS.includes(key)) mkdirSync(join(dir, value), { recursive: true });
          if (PEM_KEYS.includes(key)) selfSignedPem(join(dir, value));
          if (KEY_FILE_KEYS.includes(key)) writeFileSync(join(dir, value), "a-docs-example-key-0123456789\n");
        }
      }
      writeFileSync(join(dir, "burrow.toml"), block.text);
      const tokenFile = join(dir, "token");
      writeFileSync(tokenFile, "a-token-for-the-docs-example\n");
      const launcher: Launcher = { name: "docs-example", cwd: dir, command: (args) => agentCommand("node", args) };
      const args = ["--relay", relay.url, "--token-file", tokenFile, "--inspect", "false", "--log", "plain"];
      // A file without [[tunnel]] tables describes settings only: the command line names the origin.
      const agent = new AgentProcess(launcher, tables.length ? args : [...args, "--port", String(origin.port)]);
      try {
        const names = tables.map((table) => table.name as string);
        for (const name of names.length ? names : ["\\S+"]) {
          await agent.waitFor(new RegExp(`^tunnel ${name} is up: `));
        }
        expect(agent.output).not.toMatch(/^error:/m);
      } finally {
        await agent.stop("SIGINT");
      }
    },
  );
});

describe("the agent's flags in the docs", () => {
  it("docs/agent.md shows the --help the agent prints", async () => {
    const block = codeBlocks("docs/agent.md").find((b) => b.text.startsWith("Burrow agent:"));
    const agent = new AgentProcess("node", ["--help"]);
    expect(await agent.exited).toBe(0);
    // The help ends with an empty line, which a code block does not keep.
    expect(block?.text.trimEnd()).toBe(agent.output.trimEnd());
  });
});
