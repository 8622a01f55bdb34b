// The package's size, written into docs/benchmarks.md: the one place the docs give it (every
// other page links there). `npm run bench` calls this at its end; `npm run bench:size` alone.
// The figure is npm's own: the unpacked size of the tarball `npm pack -w agent` makes, which is
// what installing the package puts under node_modules/ (its prepack bundles, postpack cleans).

import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT } from "../test/_relay.ts";

export const BENCHMARKS_PAGE = join(ROOT, "docs/benchmarks.md");
const OPEN = "<!-- bench:package-size: written by npm run bench (bench/package-size.ts); edit outside these markers -->";
const CLOSE = "<!-- /bench:package-size -->";

export interface PackageSize {
  version: string;
  /** The tarball's unpacked size: what an install puts under node_modules/burrow-agent. */
  unpackedBytes: number;
  tarballBytes: number;
  /** dist/pac-sandbox.js, the PAC sandbox (QuickJS in WebAssembly), loaded only for a PAC file. */
  sandboxBytes: number;
  date: string;
}

/** Packs the agent without writing the tarball, and reads npm's figures. */
export function measurePackage(): PackageSize {
  const stdout = execFileSync("npm", ["pack", "--dry-run", "--json", "-w", "agent"], {
    cwd: ROOT,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
  const [packed] = JSON.parse(stdout) as {
    version: string;
    size: number;
    unpackedSize: number;
    files: { path: string; size: number }[];
  }[];
  if (!packed) throw new Error("npm pack --dry-run --json -w agent listed no package");
  return {
    version: packed.version,
    unpackedBytes: packed.unpackedSize,
    tarballBytes: packed.size,
    sandboxBytes: packed.files.find((file) => file.path === "dist/pac-sandbox.js")?.size ?? 0,
    date: new Date().toISOString().slice(0, 10),
  };
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(2)} MB`;

/** The text between the markers. */
export function packageSizeText(size: PackageSize): string {
  return [
    `| burrow-agent ${size.version} | size |`,
    "|---|---|",
    `| installed (the tarball unpacked, npm's \`unpackedSize\`) | ${mb(size.unpackedBytes)} |`,
    `| of which the PAC-file sandbox (\`dist/pac-sandbox.js\`, loaded only for a PAC file) | ${mb(size.sandboxBytes)} |`,
    `| the tarball | ${mb(size.tarballBytes)} |`,
    "",
    `Measured on ${size.date} (MB: 10^6 bytes).`,
  ].join("\n");
}

/**
 * Replaces the figures between the markers of `page`, leaving the rest of it as it was.
 * @throws {Error} when the page lacks either marker (the figure would have nowhere to go).
 */
export function writePackageSize(size: PackageSize, page = BENCHMARKS_PAGE): void {
  const text = readFileSync(page, "utf8");
  const start = text.indexOf(OPEN);
  const end = text.indexOf(CLOSE);
  if (start < 0 || end < start) throw new Error(`${page} has no ${OPEN} ... ${CLOSE} markers for the package size`);
  writeFileSync(page, `${text.slice(0, start + OPEN.length)}\n${packageSizeText(size)}\n${text.slice(end)}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const size = measurePackage();
  writePackageSize(size);
  console.log(`package: ${mb(size.unpackedBytes)} installed, written to docs/benchmarks.md`);
}
