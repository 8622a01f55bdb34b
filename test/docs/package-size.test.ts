import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BENCHMARKS_PAGE, type PackageSize, writePackageSize } from "../../bench/package-size.ts";
import { ROOT } from "../_relay.ts";

// The writer `npm run bench` uses for the package's size, on a copy of docs/benchmarks.md (the
// measurement itself is npm pack's, which test/e2e/package.test.ts runs for real).
describe("the package size in the docs", () => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-bench-page-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const size = (unpackedBytes: number): PackageSize => ({
    version: "9.9.9",
    unpackedBytes,
    tarballBytes: 654_967,
    sandboxBytes: 977_670,
    date: "2031-01-02",
  });

  it("writes the figures between the markers of docs/benchmarks.md, and nothing else", () => {
    const page = join(dir, "benchmarks.md");
    copyFileSync(BENCHMARKS_PAGE, page);
    const before = readFileSync(page, "utf8");
    writePackageSize(size(2_465_791), page);
    const once = readFileSync(page, "utf8");
    expect(once).toContain("| installed (the tarball unpacked, npm's `unpackedSize`) | 2.47 MB |");
    expect(once).toContain("| burrow-agent 9.9.9 | size |");
    expect(once).toContain("Measured on 2031-01-02");
    const outside = (text: string) => text.replace(/<!-- bench:package-size[\s\S]*<!-- \/bench:package-size -->/, "");
    expect(outside(once)).toBe(outside(before));
    // A later run replaces the figures instead of adding to them.
    writePackageSize(size(3_000_000), page);
    const twice = readFileSync(page, "utf8");
    expect(twice).toContain("| 3.00 MB |");
    expect(twice).not.toContain("| 2.47 MB |");
    expect(twice.length).toBe(once.length);
  });

  it("refuses a page without the markers", () => {
    const page = join(dir, "no-markers.md");
    writeFileSync(page, "# Benchmarks\n");
    expect(() => writePackageSize(size(1), page)).toThrow(/no <!-- bench:package-size/);
    expect(readFileSync(page, "utf8")).toBe("# Benchmarks\n");
  });

  it("is quoted on no other page: they link to docs/benchmarks.md", () => {
    const pages = ["README.md", "agent/README.md", ...readdirSync(join(ROOT, "docs")).map((name) => `docs/${name}`)];
    for (const page of pages.filter((p) => p !== "docs/benchmarks.md")) {
      expect(readFileSync(join(ROOT, page), "utf8"), page).not.toMatch(/\d(\.\d+)? ?MB installed|installed size of \d/);
    }
  });
});
