// The user's saved settings: `agent login` writes the relay and its token once, and every
// later run reads them under the flags, burrow.toml and the environment (flags.ts).
import { chmodSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { burrowDirectory } from "./claims.ts";
import { loadConfig } from "./config.ts";
import { AgentError } from "./errors.ts";

/** What config.toml may hold. */
const USER_KEYS = [
  { name: "relay", value: true, repeat: false },
  { name: "token", value: true, repeat: false },
];

export interface UserConfig {
  file: string;
  relay: string;
  token?: string;
  /** Where each value is: `~/.config/burrow/config.toml line 2, key token`. */
  from: Record<string, string>;
  /** Warnings for the CLI to print (a file others can read). */
  notes: string[];
}

/** `config.toml` in the user's Burrow directory (claims.ts), beside the claims. */
export function userConfigFile(env: (name: string) => string | undefined): string | undefined {
  const directory = burrowDirectory(env);
  return directory ? join(directory, "config.toml") : undefined;
}

/**
 * The saved settings, or undefined when there are none.
 * @throws {AgentError} "usage" for a file that is not TOML or holds another key (naming the
 *   file, line and key), or that holds a token but no relay.
 */
export function loadUserConfig(env: (name: string) => string | undefined): UserConfig | undefined {
  const file = userConfigFile(env);
  if (!file) return undefined;
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (error) {
    // ENOTDIR: a part of the path is a file (the claims' fallback copes with such a config
    // home too): no file can be there, so nothing was saved.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new AgentError(
      "usage",
      `cannot read ${file}: ${(error as Error).message}`,
      "fix its permissions, or run `agent logout`",
    );
  }
  const loaded = loadConfig(file, USER_KEYS)!;
  if (loaded.tunnels.length > 0) {
    throw new AgentError(
      "usage",
      `${file} holds [[tunnel]] tables`,
      "tunnels belong in a project's burrow.toml; this file holds relay and token",
    );
  }
  const { relay, token } = loaded.values;
  if (relay === undefined) {
    throw new AgentError("usage", `${file} has no relay`, "run `agent login --relay URL` again, or `agent logout` to remove it");
  }
  const notes: string[] = [];
  // POSIX modes only: Windows reports 0o666 for every writable file (its ACLs decide instead).
  if (process.platform !== "win32" && token && (mode & 0o077) !== 0) {
    notes.push(`${file} holds a token and other users can read it (mode ${(mode & 0o777).toString(8)}): run chmod 600 ${file}`);
  }
  return { file, relay, token: token || undefined, from: loaded.from ?? {}, notes };
}

/** Writes config.toml with mode 0600 from its creation on (it holds a token). */
export function saveUserConfig(file: string, relay: string, token: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const lines = [
    "# Written by `agent login`; `agent logout` removes it. Flags, burrow.toml and BURROW_* variables override it.",
    `relay = ${JSON.stringify(relay)}`,
    ...(token ? [`token = ${JSON.stringify(token)}`] : []),
  ];
  // Written whole under another name, then renamed over the old file: a reader never sees
  // half a file, and the new file is 0600 from its first byte (umask cannot widen it).
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${lines.join("\n")}\n`, { mode: 0o600, flag: "w" });
  if (process.platform !== "win32") chmodSync(temporary, 0o600);
  renameSync(temporary, file);
}

/** Removes config.toml. @returns whether there was one. */
export function removeUserConfig(file: string): boolean {
  try {
    statSync(file);
  } catch {
    return false;
  }
  rmSync(file);
  return true;
}
