import { createHash } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { Log } from "./log.ts";
import { randomClaim } from "./names.ts";

/** Environment variables that locate the claims directory (Deno's task must grant them). */
export const CLAIM_ENV_VARS = ["XDG_CONFIG_HOME", "HOME", "APPDATA"];

/** Where this user's claims live: `$XDG_CONFIG_HOME/burrow/claims`, `~/.config/...`, `%APPDATA%\burrow\claims`. */
export function claimsDirectory(env: (name: string) => string | undefined): string | undefined {
  if (process.platform === "win32") {
    const appData = env("APPDATA");
    return appData ? join(appData, "burrow", "claims") : undefined;
  }
  const config = env("XDG_CONFIG_HOME") || (env("HOME") ? join(env("HOME")!, ".config") : undefined);
  return config ? join(config, "burrow", "claims") : undefined;
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
  } catch (error) {
    return fallback(`${file}: ${(error as Error).message}`);
  }
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
