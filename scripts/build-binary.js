#!/usr/bin/env node
// `npm run build:binary`: the agent as one executable file, with `bun build --compile` (the Bun
// runtime and the bundled agent in one file, ~100 MB), for people who cannot install Node, Bun
// or Deno. It is the same code as the package: agent/bin/bun.ts and the sources it imports.
//   npm run build:binary                  dist/agent for this machine (never downloads anything)
//   npm run build:binary -- --all         also the cross targets, dist/agent-<os>-<arch>[.exe]
//   npm run build:binary -- --outdir DIR  somewhere else than dist/
// A cross target needs that platform's Bun runtime, which bun downloads from the npm registry
// (20-40 MB each, once; cached in ~/.bun/install/cache). Offline, such a target fails with
// "Failed to download 'bun-darwin-aarch64-v1.4.5': DNSResolveFailed" and the others still build.
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const at = args.indexOf("--outdir");
const outdir = at >= 0 && args[at + 1] ? resolve(args[at + 1]) : join(root, "dist");
const all = args.includes("--all");

const CROSS = [
  ["bun-linux-x64", "agent-linux-x64"],
  ["bun-linux-arm64", "agent-linux-arm64"],
  ["bun-darwin-arm64", "agent-darwin-arm64"],
  ["bun-darwin-x64", "agent-darwin-x64"],
  ["bun-windows-x64", "agent-windows-x64.exe"],
];

/** Builds one executable; returns undefined when it worked, else bun's last line. */
function compile(target, file) {
  const bun = join(root, "node_modules/.bin/bun");
  const entry = join(root, "agent/bin/bun.ts");
  const argv = [
    "build",
    "--compile",
    "--minify",
    ...(target ? [`--target=${target}`] : []),
    entry,
    "--outfile",
    join(outdir, file),
  ];
  const result = spawnSync(bun, argv, { cwd: root, encoding: "utf8" });
  if (result.error) return `${result.error.message} (is bun installed? run npm install)`;
  if (result.status === 0) return undefined;
  const lines = `${result.stderr}\n${result.stdout}`.split("\n").map((line) => line.trim());
  return lines.find((line) => /fail|error/i.test(line)) ?? lines.filter(Boolean).at(-1);
}

mkdirSync(outdir, { recursive: true });
const failed = compile(undefined, process.platform === "win32" ? "agent.exe" : "agent");
if (failed) {
  console.error(`error: bun could not build the executable for this machine: ${failed}`);
  console.error("  hint: run npm install first: bun is a devDependency of this repository");
  process.exit(1);
}
console.log(`built ${join(outdir, process.platform === "win32" ? "agent.exe" : "agent")} (this machine)`);
if (all) {
  let missing = 0;
  for (const [target, file] of CROSS) {
    const error = compile(target, file);
    if (error) missing++;
    console.log(error ? `skipped ${file}: ${error}` : `built ${join(outdir, file)} (${target})`);
  }
  if (missing) console.log(`${missing} cross target(s) need their Bun runtime from the npm registry; run again online`);
}
