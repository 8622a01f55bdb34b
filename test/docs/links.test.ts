import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../_relay.ts";

// scripts/check-links.js, run as `npm run check` runs it, on this clone and on a fixture.
function check(root?: string): { status: number | null; output: string } {
  const result = spawnSync(process.execPath, [join(ROOT, "scripts/check-links.js"), ...(root ? [root] : [])], {
    encoding: "utf8",
  });
  return { status: result.status, output: result.stdout + result.stderr };
}

describe("the docs' link checker", () => {
  const fixture = mkdtempSync(join(tmpdir(), "burrow-links-"));
  afterAll(() => rmSync(fixture, { recursive: true, force: true }));

  function write(files: Record<string, string>): void {
    rmSync(fixture, { recursive: true, force: true });
    mkdirSync(join(fixture, "docs"), { recursive: true });
    mkdirSync(join(fixture, "agent"), { recursive: true });
    for (const [path, text] of Object.entries(files)) writeFileSync(join(fixture, path), text);
  }

  it("finds no dead link between README.md, agent/README.md and docs/", () => {
    const { status, output } = check();
    expect(output).toMatch(/no dead link/);
    expect(status).toBe(0);
  });

  it("accepts links to pages and to headings as GitHub names them", () => {
    write({
      "README.md":
        "# Top\n\n[agent](docs/agent.md#the-package-burrow-agent), [here](#a-b-c), [twice](docs/agent.md#run-it-1)\n\n## A, b: `c`!\n",
      "docs/agent.md": "# Agent\n\n### The package: `burrow-agent`\n\n## Run it\n\n## Run it\n\n[home](../README.md#top)\n",
      "agent/README.md": "# burrow-agent\n\n```md\n[not a link](nowhere.md)\n# not a heading\n```\n",
    });
    const { status, output } = check(fixture);
    expect(output).toMatch(/no dead link/);
    expect(status).toBe(0);
  });

  it("names each dead link, dead anchor and heading inside a code block, and fails", () => {
    write({
      "README.md":
        "# Top\n\n[gone](docs/gone.md)\n[typo](docs/agent.md#run-it-now) and [here](#nowhere)\n[fenced](#not-a-heading)\n",
      "docs/agent.md": "# Agent\n\n## Run it\n\n```sh\n# not a heading\n```\n",
      "agent/README.md": "# burrow-agent\n",
    });
    const { status, output } = check(fixture);
    expect(output).toContain("README.md:3: dead link docs/gone.md: no file docs/gone.md");
    expect(output).toContain("README.md:4: dead link docs/agent.md#run-it-now: no heading #run-it-now in docs/agent.md");
    expect(output).toContain("README.md:4: dead link #nowhere: no heading #nowhere in README.md");
    expect(output).toContain("README.md:5: dead link #not-a-heading: no heading #not-a-heading in README.md");
    expect(output).toContain("error: 4 dead links in the docs");
    expect(status).toBe(1);
  });
});

describe("the README sections that messages name", () => {
  // The agent and the relay send people to the README by section name ("see the README's
  // Security section", "see \"Deploy your relay\" in Burrow's README"); those sections must exist.
  const sources = ["agent/src", "edge/src"].flatMap((dir) =>
    readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".ts"))
      .map((file) => readFileSync(join(ROOT, dir, file), "utf8")),
  );
  const named = new Set(
    sources.flatMap((text) => [
      ...[...text.matchAll(/the README's ([A-Z][A-Za-z ]*?) section/g)].map((m) => m[1]!),
      ...[...text.matchAll(/"([A-Z][A-Za-z ]*?)" in Burrow's README/g)].map((m) => m[1]!),
    ]),
  );
  const headings = readFileSync(join(ROOT, "README.md"), "utf8")
    .split("\n")
    .filter((line) => line.startsWith("#"))
    .map((line) => line.replace(/^#+\s*/, ""));

  it("finds the messages", () => {
    expect([...named]).toEqual(expect.arrayContaining(["Security", "Deploy your relay"]));
  });

  it.each([...named])("the README has a section %s", (name) => {
    expect(headings.some((heading) => heading === name || heading.startsWith(`${name},`))).toBe(true);
  });
});
