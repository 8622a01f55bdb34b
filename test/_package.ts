// The agent as users get it, for the tests and the benchmark: the tarball `npm pack -w agent`
// makes, installed into an empty project with the registry out of reach, and the executable
// `npm run build:binary` makes, alone in an empty directory.
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Launcher } from "./_agent.ts";
import { ROOT } from "./_relay.ts";

const run = promisify(execFile);
const BIN = join(ROOT, "node_modules/.bin");
export const PACKAGE_NAME = "burrow-agent";

/**
 * npm with no way to the registry: `--offline`, and a registry address where nothing listens,
 * so that an install that needed anything from it would fail instead of quietly fetching.
 */
const OFFLINE_NPM = { ...process.env, npm_config_offline: "true", npm_config_registry: "http://127.0.0.1:9/" };

export interface InstalledPackage {
  tarball: string;
  /** The files in the tarball, as `npm pack --json` lists them. */
  files: string[];
  /** The empty project the tarball was installed into. */
  project: string;
  /** Bytes under the project's node_modules/: what installing the agent costs. */
  installedBytes: number;
}

/** Packs the agent (running its prepack bundling) and installs the tarball into a new project. */
export async function installPackage(): Promise<InstalledPackage> {
  const dir = mkdtempSync(join(tmpdir(), "burrow-package-"));
  const { stdout } = await run("npm", ["pack", "-w", "agent", "--json", "--pack-destination", dir], {
    cwd: ROOT,
    env: OFFLINE_NPM,
  });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  const project = join(dir, "project");
  mkdirSync(project);
  writeFileSync(join(project, "package.json"), `${JSON.stringify({ name: "someones-app", private: true }, null, 2)}\n`);
  const tarball = join(dir, packed!.filename);
  await run("npm", ["install", "--no-audit", "--no-fund", tarball], { cwd: project, env: OFFLINE_NPM });
  return {
    tarball,
    files: packed!.files.map((file) => file.path).sort(),
    project,
    installedBytes: size(join(project, "node_modules")),
  };
}

function size(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.size;
  return readdirSync(path).reduce((sum, entry) => sum + size(join(path, entry)), 0);
}

/** The flags `deno task agent` gives `deno run` (deno.json), which the installed copy needs too. */
export function denoFlags(): string[] {
  const task = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).tasks.agent.command as string;
  const match = /\bdeno run (.+) agent\/bin\/deno\.ts$/.exec(task);
  if (!match) throw new Error(`deno.json's agent task is not "... deno run <flags> agent/bin/deno.ts": ${task}`);
  return match[1]!.split(" ");
}

/** The flags of deno.json's relay task: what `agent relay` needs of Deno's permissions. */
export function denoRelayFlags(): string[] {
  const task = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).tasks.relay.command as string;
  const match = /\bdeno run (.+) agent\/bin\/deno\.ts relay$/.exec(task);
  if (!match) throw new Error(`deno.json's relay task is not "... deno run <flags> agent/bin/deno.ts relay": ${task}`);
  return match[1]!.split(" ");
}

/** Where the installed package keeps the Deno bundle, relative to the project. */
export const DENO_ENTRY = `node_modules/${PACKAGE_NAME}/dist/deno.js`;

/**
 * The installed package on each runtime, started as the package's README says: `npx agent`,
 * `bunx --bun agent`, and `deno run <the task's flags> node_modules/burrow-agent/dist/deno.js`.
 */
export function packageLaunchers(project: string): Record<"node" | "bun" | "deno", Launcher> {
  const env = { ...OFFLINE_NPM, PATH: `${BIN}:${process.env.PATH}` };
  return {
    node: { name: "package-node", cwd: project, env, command: (args) => ["npx", ["agent", ...args]] },
    bun: { name: "package-bun", cwd: project, env, command: (args) => [join(BIN, "bunx"), ["--bun", "agent", ...args]] },
    deno: {
      name: "package-deno",
      cwd: project,
      env,
      // As a shell would run the documented command: $HOME expanded.
      command: (args) => [
        join(BIN, "deno"),
        ["run", ...denoFlags().map((flag) => flag.replaceAll("$HOME", homedir())), DENO_ENTRY, ...args],
      ],
    },
  };
}

/** The installed package's bin under Node, without npx in between: what `npx agent` ends up running. */
export function packageNodeLauncher(project: string): Launcher {
  return {
    name: "package-node",
    cwd: project,
    command: (args) => [process.execPath, [join(project, "node_modules/.bin/agent"), ...args]],
  };
}

/** Builds the executable with `npm run build:binary -- --outdir DIR`; returns its path. */
export async function buildExecutable(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "burrow-executable-"));
  await run(process.execPath, [join(ROOT, "scripts/build-binary.js"), "--outdir", dir], { cwd: ROOT });
  return join(dir, "agent");
}

/**
 * The executable copied alone into an empty directory, run with a PATH that reaches no Node,
 * Bun or Deno: what a machine without any of them gives it. `keepPath` keeps the test's PATH,
 * for `ip netns exec` to be found.
 */
export function executableLauncher(executable: string, { keepPath = false } = {}): Launcher {
  const dir = mkdtempSync(join(tmpdir(), "burrow-alone-"));
  const copy = join(dir, "agent");
  copyFileSync(executable, copy);
  // Copies keep the mode bits of the source on Linux and macOS: it stays executable.
  const nothing = join(dir, "no-runtimes-here");
  mkdirSync(nothing);
  return { name: "executable", cwd: dir, env: keepPath ? {} : { PATH: nothing }, command: (args) => [copy, args] };
}
