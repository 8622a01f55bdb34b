import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import { AgentError } from "./errors.ts";
import { closest } from "./suggest.ts";

/** Flags and file keys share names: `token-file = "..."` in burrow.toml is `--token-file`. */
export interface Settings {
  values: Record<string, string>;
  lists: Record<string, string[]>;
  /** Where a value came from when not a flag: `burrow.toml line 3, key port`, `BURROW_PORT`. */
  from?: Record<string, string>;
}

/** What burrow.toml says: top-level keys, and one Settings per `[[tunnel]]` table. */
export interface ConfigFile extends Settings {
  file: string;
  tunnels: Settings[];
}

/** The shape of a key, from the flag table. */
export interface KeySpec {
  name: string;
  /** Takes a value (else it is a switch: true or false). */
  value: boolean;
  repeat: boolean;
}

export const DEFAULT_CONFIG = "burrow.toml";

/** Paths in a config file are relative to the file, wherever the agent runs. */
const PATH_KEYS = new Set(["dir", "origin-ca", "token-file", "ca", "connect-key-file"]);

/** Keys that describe one tunnel; a `[[tunnel]]` table may hold only these. */
export const TUNNEL_KEYS = new Set([
  "name",
  "port",
  "host",
  "origin",
  "dir",
  "tcp",
  "connect-key-file",
  "public-port",
  "dir-dotfiles",
  "host-header",
  "origin-insecure",
  "origin-ca",
  "basic-auth",
  "allow-ip",
  "verify-webhook",
  "connections",
]);

/**
 * Reads a config file: `path`, or burrow.toml in the working directory when it exists.
 * @returns undefined when no path is given and there is no burrow.toml.
 * @throws {AgentError} "usage" for a file that cannot be read, is not TOML, or has a bad key
 *   (the message names the file, the line and the key).
 */
export function loadConfig(path: string | undefined, keys: KeySpec[]): ConfigFile | undefined {
  const file = path ?? DEFAULT_CONFIG;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (path === undefined && (error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new AgentError(
      "usage",
      `cannot read the config file ${file}: ${(error as Error).message}`,
      "give the path of a TOML file with --config, or leave it out to read burrow.toml here if there is one",
    );
  }
  let data: Record<string, unknown>;
  try {
    data = parse(text) as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const line = text.split(/\r?\n/)[error.line - 1] ?? "";
    const key = /^\s*([A-Za-z0-9_"'.-]+)\s*=/.exec(line)?.[1];
    const reason = error.message.split("\n", 1)[0]!.replace(/^Invalid TOML document: /, "");
    throw new AgentError(
      "usage",
      `${file} line ${error.line}${key ? `, key ${key}` : ""}: ${reason}`,
      'TOML strings need quotes (name = "my-app"); see the README\'s example burrow.toml',
    );
  }
  const lines = text.split(/\r?\n/);
  /** The line of `key` in the `index`-th [[tunnel]] table (-1: before any table). */
  const lineOf = (key: string, index: number): number => {
    let table = -1;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (key === "tunnel" && /^\[+\s*tunnel\s*\]/.test(line)) return i + 1;
      if (/^\[\[\s*tunnel\s*\]\]/.test(line)) table++;
      else if (line.startsWith("[")) table = Number.NaN;
      else if (table === index && new RegExp(`^["']?${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}["']?\\s*=`).test(line))
        return i + 1;
    }
    return 0;
  };
  const bad = (key: string, index: number, what: string, hint: string): AgentError => {
    const line = lineOf(key, index);
    return new AgentError("usage", `${file}${line ? ` line ${line}` : ""}, key ${key}: ${what}`, hint);
  };
  const read = (table: Record<string, unknown>, index: number): Settings => {
    const settings: Settings = { values: {}, lists: {}, from: {} };
    for (const [key, value] of Object.entries(table)) {
      if (key === "tunnel" && index === -1) continue;
      const spec = keys.find((k) => k.name === key);
      if (!spec || (index >= 0 && !TUNNEL_KEYS.has(key))) {
        const near = spec
          ? undefined
          : closest(
              key,
              keys.map((k) => k.name),
            );
        throw bad(
          key,
          index,
          spec ? "is not a per-tunnel key" : `is not a setting${near ? `; did you mean ${near}?` : ""}`,
          spec
            ? `move it above the first [[tunnel]]; a tunnel takes ${[...TUNNEL_KEYS].join(", ")}`
            : `keys are the flags' names without the dashes in front: ${keys.map((k) => k.name).join(", ")}`,
        );
      }
      const line = lineOf(key, index);
      settings.from![key] = `${file}${line ? ` line ${line}` : ""}, key ${key}`;
      if (!spec.value) {
        if (typeof value !== "boolean") throw bad(key, index, `must be true or false, not ${show(value)}`, `${key} = true`);
        if (value) settings.values[key] = "true";
      } else if (spec.repeat) {
        const list = Array.isArray(value) ? value : [value];
        if (!list.every((item) => typeof item === "string")) {
          throw bad(key, index, `must be a string or a list of strings, not ${show(value)}`, `${key} = ["first", "second"]`);
        }
        settings.lists[key] = list as string[];
        settings.values[key] = list.at(-1) as string;
      } else if (
        typeof value === "string" &&
        (PATH_KEYS.has(key) || (key === "proxy-pac" && !/^[a-z][a-z0-9+.-]+:/i.test(value)))
      ) {
        // proxy-pac is a path (relative to the file, like the others) unless it is a URL.
        settings.values[key] = resolve(dirname(file), value);
      } else if (typeof value === "string" || (typeof value === "number" && Number.isFinite(value))) {
        settings.values[key] = String(value);
      } else if (typeof value === "boolean" && key === "inspect" && !value) {
        settings.values[key] = "false";
      } else {
        const numeric = /^(port|heartbeat|inspect-keep)$/.test(key);
        throw bad(
          key,
          index,
          `must be a ${numeric ? "number" : "string"}, not ${show(value)}`,
          numeric ? `for example ${key} = 20` : `put the value in quotes: ${key} = "..."`,
        );
      }
    }
    return settings;
  };
  const top = read(data, -1);
  const tables = data.tunnel ?? [];
  if (!Array.isArray(tables) || !tables.every((t) => typeof t === "object" && t !== null && !Array.isArray(t))) {
    throw bad("tunnel", -1, "must be [[tunnel]] tables", "write each tunnel as a [[tunnel]] table with its keys below it");
  }
  return { file, ...top, tunnels: tables.map((table, index) => read(table as Record<string, unknown>, index)) };
}

function show(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value instanceof Date || (typeof value === "object" && value !== null && "toISOString" in value)) return "a date";
  if (typeof value === "object") return "a table";
  return JSON.stringify(value);
}
