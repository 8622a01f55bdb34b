import { createHash } from "node:crypto";
import {
  chmodSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { setInterval } from "node:timers";
import { DEFAULT_NAME_TTL_DAYS } from "@burrow/protocol";
import type { Log } from "./log.ts";
import { randomClaim } from "./names.ts";

/** Environment variables that locate the claims directory (Deno's task must grant them). */
export const CLAIM_ENV_VARS = ["XDG_CONFIG_HOME", "HOME", "APPDATA"];

/**
 * This user's Burrow directory: `$XDG_CONFIG_HOME/burrow`, else `~/.config/burrow`, else
 * `%APPDATA%\burrow` on Windows. It holds the claims and what `agent login` saves
 * (user-config.ts), where Deno's task may write (--allow-write=$HOME/.config/burrow).
 */
export function burrowDirectory(env: (name: string) => string | undefined): string | undefined {
  if (process.platform === "win32") {
    const appData = env("APPDATA");
    return appData ? join(appData, "burrow") : undefined;
  }
  const config = env("XDG_CONFIG_HOME") || (env("HOME") ? join(env("HOME")!, ".config") : undefined);
  return config ? join(config, "burrow") : undefined;
}

/** Where this user's claims live: the `claims` folder of {@link burrowDirectory}. */
export function claimsDirectory(env: (name: string) => string | undefined): string | undefined {
  const directory = burrowDirectory(env);
  return directory ? join(directory, "claims") : undefined;
}

/** The file of one relay's claim to one name: a hash, so the directory lists no relays or names. */
export function claimFile(directory: string, relay: URL, name: string): string {
  const digest = createHash("sha256").update(`${relay.origin}\u0000${name}`).digest("hex");
  return join(directory, digest.slice(0, 32));
}

const CLAIM = /^[A-Za-z0-9+/=_-]{16,128}$/;

/**
 * The secret that proves to an open relay that this agent owns `name`: kept in a file of its
 * own, so an agent restarted on this machine gets its name back at once instead of waiting out
 * the relay's grace for its previous run. When the file cannot be kept (a read-only home, a
 * Deno permission not granted) this warns once and returns a claim for this run only.
 */
export function loadClaim(relay: URL, name: string, env: (name: string) => string | undefined, log: Log): string {
  const directory = claimsDirectory(env);
  const fallback = (why: string) => {
    log.warn(
      `cannot keep the claim to the name ${name} (${why}); using one for this run only, so after a restart the relay holds the name for this run's agent for up to a minute`,
    );
    return randomClaim();
  };
  if (!directory) return fallback("neither XDG_CONFIG_HOME nor HOME is set");
  const file = claimFile(directory, relay, name);
  try {
    const claim = settleClaim(directory, file);
    keepFresh(file);
    pruneClaims(directory, file);
    return claim;
  } catch (error) {
    return fallback(`${file}: ${(error as Error).message}`);
  }
}

/** The claim in `file`, created (whole, once) if there is none yet. */
function settleClaim(directory: string, file: string): string {
  const existing = readClaim(file);
  if (existing !== undefined) return existing;
  // 0700/0600: the claim is as good as the name to anyone who reads it.
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  if (process.platform !== "win32") chmodSync(directory, 0o700);
  const claim = randomClaim();
  // Written whole under a unique name, then linked into place: link() fails if the file
  // exists, so of two agents starting at once one claim wins and neither reads half a file.
  const temporary = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(temporary, `${claim}\n`, { mode: 0o600, flag: "wx" });
  try {
    linkSync(temporary, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    unlinkSync(temporary);
  }
  return readClaim(file) ?? claim;
}

/** How often a running agent marks its claim as in use (the relay refreshes its record of a name in use as often). */
const DAY_MS = 86_400_000;

/**
 * Marks `file` as in use now and then daily while this agent runs: its modification time is
 * when the claim was last used, which pruneClaims reads. A file that cannot be touched is
 * left as it is (the claim itself is already in hand).
 */
function keepFresh(file: string): void {
  const touch = () => {
    try {
      const now = new Date();
      utimesSync(file, now, now);
    } catch {
      // Removed by hand, or a read-only directory: nothing to keep fresh.
    }
  };
  touch();
  // node:timers' own setInterval, for unref() on every runtime (Deno's global one returns a number).
  setInterval(touch, DAY_MS).unref();
}

/** A claim file (32 hex digits) or one being written (its name, a pid and a random suffix). */
const CLAIM_FILE = /^[0-9a-f]{32}(?:\.\d+\.[0-9a-z]*)?$/;

/**
 * Removes the claim files of `directory` unused for DEFAULT_NAME_TTL_DAYS, but `keep`, and
 * returns how many. Without this they pile up, one per relay and name ever used (a busy machine
 * had 233). The default, not a relay's own NAME_TTL_DAYS: the agent cannot read that, and on
 * an open relay a claim only counts while its agent runs and for the minute after it drops.
 * Age is the file's modification time, which every agent using a claim refreshes (keepFresh)
 * and which is new for a file another agent is writing, so no agent's file is removed under it;
 * files not named like claims are not ours, and stay. Failures are ignored: pruning is tidying.
 */
export function pruneClaims(directory: string, keep: string, now = Date.now()): number {
  const cutoff = now - DEFAULT_NAME_TTL_DAYS * DAY_MS;
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch {
    return 0;
  }
  for (const name of names) {
    const path = join(directory, name);
    if (!CLAIM_FILE.test(name) || path === keep) continue;
    try {
      if (statSync(path).mtimeMs >= cutoff) continue;
      unlinkSync(path);
      removed++;
    } catch {
      // Gone already (another agent pruned it), or not ours to remove.
    }
  }
  return removed;
}

/** The claim in `file`, or undefined if there is no file yet. */
function readClaim(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8").trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  if (!CLAIM.test(text)) throw new Error("the file does not hold a claim; delete it and start the agent again");
  return text;
}
