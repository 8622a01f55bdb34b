import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_NAME_TTL_DAYS } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { claimFile, claimsDirectory, loadClaim } from "../../agent/src/claims.ts";
import type { Log } from "../../agent/src/log.ts";

const DAY_MS = 86_400_000;
const relay = new URL("http://relay.test:8787");

/** A log that fails the test on a warning: pruning is silent. */
const log = { warn: (message: string) => expect.fail(`unexpected warning: ${message}`) } as unknown as Log;

/** A claims directory of its own, as an agent with XDG_CONFIG_HOME=`home` finds it. */
function setUp(): { env: (name: string) => string | undefined; directory: string } {
  const home = mkdtempSync(join(tmpdir(), "burrow-claims-"));
  const env = (name: string) => (name === "XDG_CONFIG_HOME" ? home : undefined);
  const directory = claimsDirectory(env)!;
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  return { env, directory };
}

/** Writes a file at `path` last modified `days` ago. */
function aged(path: string, days: number, content = "A".repeat(43)): string {
  writeFileSync(path, `${content}\n`, { mode: 0o600 });
  const when = new Date(Date.now() - days * DAY_MS);
  utimesSync(path, when, when);
  return path;
}

describe("claim files", () => {
  it(`are removed once unused for ${DEFAULT_NAME_TTL_DAYS} days (the relay's default NAME_TTL_DAYS) when an agent loads a claim`, () => {
    const { env, directory } = setUp();
    const stale = [
      aged(claimFile(directory, relay, "old"), DEFAULT_NAME_TTL_DAYS + 1),
      aged(claimFile(directory, new URL("https://other.test"), "older"), 400),
      // What an agent killed while writing its claim left behind.
      aged(`${claimFile(directory, relay, "crashed")}.4242.k3j5h2`, DEFAULT_NAME_TTL_DAYS + 1, "half"),
    ];
    const kept = [
      aged(claimFile(directory, relay, "recent"), DEFAULT_NAME_TTL_DAYS - 1),
      // Another agent writing its claim right now: new, so never removed under it.
      aged(`${claimFile(directory, relay, "starting")}.4243.a1b2c3`, 0, ""),
      // Not named like a claim: not ours.
      aged(join(directory, "notes.txt"), 400, "mine"),
    ];
    expect(loadClaim(relay, "new", env, log)).toMatch(/^[A-Za-z0-9_-]{32}$/);
    for (const path of stale) expect(existsSync(path), path).toBe(false);
    for (const path of kept) expect(existsSync(path), path).toBe(true);
    expect(readdirSync(directory)).toHaveLength(kept.length + 1);
  });

  it("keep the claim an agent loads, however old, and mark it as used now", () => {
    const { env, directory } = setUp();
    const claim = "B".repeat(43);
    const file = aged(claimFile(directory, relay, "mine"), 400, claim);
    expect(loadClaim(relay, "mine", env, log)).toBe(claim);
    expect(Date.now() - statSync(file).mtimeMs).toBeLessThan(DAY_MS);
    // So an agent loading another name's claim tomorrow leaves this one alone.
    loadClaim(relay, "another", env, log);
    expect(existsSync(file)).toBe(true);
  });
});
