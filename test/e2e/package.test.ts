import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime, type Launcher, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import {
  DENO_ENTRY,
  denoFlags,
  denoRelayFlags,
  executableLauncher,
  type InstalledPackage,
  installPackage,
  PACKAGE_NAME,
  packageLaunchers,
  packageNodeLauncher,
} from "../_package.ts";
import { Child, freePort } from "../_process.ts";
import { Relay, ROOT } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

const MB = 1e6;
const VERSION = JSON.parse(readFileSync(join(ROOT, "agent/package.json"), "utf8")).version as string;

/** Runs an agent command to its end. */
async function run(runtime: AgentRuntime, args: string[]): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess(runtime, args);
  return { status: await agent.exited, output: agent.output };
}

const TOKEN = "package-test-token";
/** npm with the registry out of reach, as installPackage uses it. */
const OFFLINE_ENV = { npm_config_offline: "true", npm_config_registry: "http://127.0.0.1:9/" };

let relay: Relay;
let tokenRelay: Relay;
let origin: Origin;
let installed: InstalledPackage;
let launchers: Record<RuntimeName, Launcher>;
let sourcesHelp: string;

beforeAll(async () => {
  const started = performance.now();
  [relay, tokenRelay, origin, installed] = await Promise.all([
    Relay.start(),
    Relay.start({ vars: { BURROW_TOKENS: `alice:${TOKEN}` } }),
    Origin.start(),
    installPackage(),
  ]);
  console.log(
    `[package] packed and installed offline in ${Math.round(performance.now() - started)}ms (with the relay's start); ` +
      `installed size ${(installed.installedBytes / MB).toFixed(2)} MB`,
  );
  launchers = packageLaunchers(installed.project);
  sourcesHelp = (await run("node", ["--help"])).output;
}, 120_000);

afterAll(async () => {
  await relay?.dispose();
  await tokenRelay?.dispose();
  await origin?.close();
  if (installed) rmSync(dirname(installed.tarball), { recursive: true, force: true });
});

/**
 * Starts `agent relay` from `runtime` (the installed package or the executable) on a free port,
 * has an agent from the sources serve a tunnel through it, and stops both.
 */
async function relays(runtime: Launcher, name: string): Promise<void> {
  const port = await freePort();
  const [command, argv] = runtime.command(["relay", "--port", String(port), "--host", "127.0.0.1", "--base-domain", "localhost"]);
  const child = new Child(`relay:${runtime.name}`, command, argv, { cwd: runtime.cwd, env: { ...process.env, ...runtime.env } });
  try {
    await child.waitFor(/^relay \| listening on http:\/\/127\.0\.0\.1:\d+ /);
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, { url: `http://localhost:${port}` }, name));
    try {
      expect(agent.url).toBe(`http://${name}.localhost:${port}`);
      const response = await visit(at(agent.url, "/status/201"));
      expect(response.status, agent.output).toBe(201);
    } finally {
      await agent.stop("SIGINT");
    }
  } finally {
    expect(await child.stop("SIGTERM"), child.output).toBe(0);
  }
}

/** Starts an agent, checks a visitor gets the origin's answer through it, and stops it. */
async function serves(runtime: AgentRuntime, name: string, extra: string[] = []): Promise<AgentProcess> {
  const agent = await AgentProcess.start(runtime, [...tunnelArgs(origin.port, relay, name), ...extra]);
  try {
    const response = await visit(at(agent.url, "/status/201"));
    expect(response.status, agent.output).toBe(201);
  } finally {
    await agent.stop("SIGINT");
  }
  return agent;
}

describe("the burrow-agent package", () => {
  it("packs the bundles, the bin, README and licence, and no sources", () => {
    expect(installed.files).toEqual([
      "LICENSE",
      "README.md",
      "bin/agent.js",
      "dist/bun.js",
      "dist/deno.js",
      "dist/node.js",
      "dist/pac-sandbox.js",
      "package.json",
    ]);
    // postpack removed the bundles: in the clone, the sources run.
    expect(existsSync(join(ROOT, "agent/dist"))).toBe(false);
  });

  it("installs offline with nothing from the registry, in under 10 MB", () => {
    const manifest = JSON.parse(readFileSync(join(installed.project, "node_modules", PACKAGE_NAME, "package.json"), "utf8"));
    expect(manifest.dependencies ?? {}).toEqual({});
    expect(manifest.bin).toEqual({ agent: "./bin/agent.js", "burrow-agent": "./bin/agent.js" });
    const lock = JSON.parse(readFileSync(join(installed.project, "package-lock.json"), "utf8"));
    expect(Object.keys(lock.packages).filter(Boolean)).toEqual([`node_modules/${PACKAGE_NAME}`]);
    expect(installed.installedBytes).toBeLessThan(10 * MB);
  });

  it.each(["node", "bun", "deno"] as const)("serves a tunnel when installed, on %s", async (runtime) => {
    const agent = await serves(launchers[runtime], `package-${runtime}`);
    // The only warning: the test relay has no tokens, and the agent says so.
    expect(agent.output.replace(/^warning: this relay is open: .*$/m, "")).not.toMatch(/^(error|warning):/m);
  });

  it.each(["node", "bun", "deno"] as const)("runs `agent relay` when installed, on %s", async (runtime) => {
    // Node: the bin npx runs, without npx, whose exit on SIGTERM is its own, not the relay's.
    const launcher =
      runtime === "node"
        ? packageNodeLauncher(installed.project)
        : runtime === "deno"
          ? {
              ...launchers.deno,
              command: (args: string[]) =>
                [join(ROOT, "node_modules/.bin/deno"), ["run", ...denoRelayFlags(), DENO_ENTRY, ...args]] as [string, string[]],
            }
          : launchers[runtime];
    await relays(launcher, `relay-${runtime}`);
  });

  it.each(["node", "bun", "deno"] as const)("prints the sources' --help and the package version on %s", async (runtime) => {
    const help = await run(launchers[runtime], ["--help"]);
    expect(help.status).toBe(0);
    expect(help.output).toBe(sourcesHelp);
    const version = await run(launchers[runtime], ["--version"]);
    expect(version.output).toMatch(new RegExp(`^agent ${VERSION.replaceAll(".", "\\.")} \\(${runtime} \\d+\\.\\d+\\.\\d+\\)$`));
  });

  it("runs under Node with plain `bunx agent`, as its README says", async () => {
    const agent = await run({ ...launchers.bun, command: (args) => [join(ROOT, "node_modules/.bin/bunx"), ["agent", ...args]] }, [
      "--version",
    ]);
    expect(agent.output).toMatch(/^agent \S+ \(node /);
  });

  // npx and bunx given the package's name run its one bin whatever its name; with two bins they
  // run the one named like the package. `burrow-agent` alone is what an npm script or a global
  // install puts on PATH.
  it.each([
    ["burrow-agent", "node"],
    ["npx burrow-agent", "node"],
    ["bunx burrow-agent", "node"],
    ["bunx --bun burrow-agent", "bun"],
    ["npx agent", "node"],
  ])("runs the installed package as `%s`", async (command, runtime) => {
    const shell = new Child(command, "/bin/sh", ["-c", `${command} --version`], {
      cwd: installed.project,
      env: {
        ...process.env,
        ...OFFLINE_ENV,
        PATH: `${join(installed.project, "node_modules/.bin")}:${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
      },
    });
    expect(await shell.exited, shell.output).toBe(0);
    expect(shell.output).toMatch(new RegExp(`^agent ${VERSION.replaceAll(".", "\\.")} \\(${runtime} `, "m"));
  });

  it("runs with npx and no install: npx picks the bin named like the package", async () => {
    // `npx burrow-agent` outside a project fetches the package and runs its bin named
    // burrow-agent (of two bins, the one named like the package); given the tarball as a file:
    // spec instead of the registry's name, npx resolves it the same way, offline.
    const empty = mkdtempSync(join(tmpdir(), "burrow-npx-"));
    const shell = new Child("npx", "npx", ["--yes", `file:${installed.tarball}`, "--version"], {
      cwd: empty,
      env: { ...process.env, ...OFFLINE_ENV, npm_config_cache: join(empty, ".npm") },
    });
    expect(await shell.exited, shell.output).toBe(0);
    expect(shell.output).toMatch(/^agent \S+ \(node /m);
    rmSync(empty, { recursive: true, force: true });
  });

  it("serves `npx burrow-agent --port 8000` with no other flag after `agent login` to a relay with tokens", async () => {
    const config = mkdtempSync(join(tmpdir(), "burrow-package-config-"));
    const env = {
      ...process.env,
      ...OFFLINE_ENV,
      XDG_CONFIG_HOME: config,
      PATH: `${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
    };
    const login = spawn("npx", ["burrow-agent", "login", "--relay", tokenRelay.url], { cwd: installed.project, env });
    let said = "";
    login.stdout.on("data", (chunk) => (said += chunk));
    login.stderr.on("data", (chunk) => (said += chunk));
    login.stdin.end(`${TOKEN}\n`);
    expect(await new Promise((resolve) => login.on("close", resolve)), said).toBe(0);
    const agent = await AgentProcess.start(
      {
        name: "npx-burrow-agent",
        cwd: installed.project,
        env: { ...OFFLINE_ENV, XDG_CONFIG_HOME: config },
        command: (args) => ["/bin/sh", ["-c", `npx burrow-agent ${args.join(" ")}`]],
      },
      ["--port", String(origin.port)],
    );
    try {
      expect(agent.url).toContain(`localhost:${tokenRelay.port}`);
      expect((await visit(at(agent.url, "/status/201"))).status).toBe(201);
    } finally {
      await agent.stop("SIGINT");
      rmSync(config, { recursive: true, force: true });
    }
  });

  it("documents in the agent's page and its README the Deno command the tests run, with deno task's permissions", () => {
    const command = `deno run ${denoFlags().join(" ")} ${DENO_ENTRY} --port 8000`;
    expect(readFileSync(join(ROOT, "docs/agent.md"), "utf8")).toContain(command);
    const readme = readFileSync(join(ROOT, "agent/README.md"), "utf8");
    expect(readme).toContain(command);
    expect(readme).toContain("npx -p burrow-agent agent --port 8000");
    expect(readme).toContain("bunx --bun --package burrow-agent agent --port 8000");
  });

  it("tells a package user whose relay is not running to deploy one, not to run the clone's scripts", async () => {
    // A port nothing listens on: the relay the user named is not running.
    const closed = await freePort();
    const agent = new AgentProcess(launchers.node, ["--port", "8000", "--relay", `http://localhost:${closed}`]);
    await agent.waitFor(/hint: /);
    await agent.stop("SIGINT");
    expect(agent.output).toContain(
      `hint: no relay runs at http://localhost:${closed}: deploy your relay (see "Deploy your relay" in Burrow's README) and pass its URL with --relay https://... (or BURROW_RELAY)`,
    );
    expect(agent.output).not.toMatch(/npm run (relay|dev)/);
  });

  it("tells visitors of a tunnel without an agent to start the package's agent", async () => {
    const response = await visit(`${relay.url}/t/nobody-home/`);
    expect(response.status).toBe(502);
    expect(response.body.toString()).toContain("npx -p burrow-agent agent --port 8000 --name nobody-home --relay");
  });
});

describe("the agent executable", () => {
  let alone: Launcher;

  beforeAll(() => {
    alone = executableLauncher(inject("agentExecutable"));
  });

  afterAll(() => {
    if (alone) rmSync(alone.cwd, { recursive: true, force: true });
  });

  it("serves a tunnel from an empty directory with no Node, Bun or Deno on PATH, on both transports", async () => {
    await serves(alone, "executable-ws", ["--transport", "websocket"]);
    await serves(alone, "executable-https", ["--transport", "https"]);
  });

  it("runs `agent relay` from an empty directory with no Node, Bun or Deno on PATH", async () => {
    await relays(alone, "executable-relay");
  });

  it("prints the sources' --help and the package version", async () => {
    expect((await run(alone, ["--help"])).output).toBe(sourcesHelp);
    expect((await run(alone, ["--version"])).output).toMatch(new RegExp(`^agent ${VERSION.replaceAll(".", "\\.")} \\(bun `));
  });

  it("passes agent doctor against the relay", async () => {
    const { status, output } = await run(alone, ["doctor", "--relay", relay.url]);
    expect(status, output).toBe(0);
    expect(output).toMatch(/^ok\s+relay\s+a Burrow relay speaking protocol \d+/m);
  });
});
