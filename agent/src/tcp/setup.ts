import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomId } from "@burrow/protocol";
import type { LinkService } from "../agent.ts";
import { burrowDirectory, claimFile } from "../claims.ts";
import { AgentError } from "../errors.ts";
import type { Log } from "../log.ts";
import { readUserFile } from "../origin-setup.ts";
import type { Runtime } from "../runtime.ts";
import { TcpForwarder, type TcpTarget } from "./forward.ts";

const PORT = /^\d{1,5}$/;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/**
 * `--tcp 22` (localhost) or `--tcp HOST:PORT` (a machine on the agent's network).
 * @throws {AgentError} "usage" for anything else.
 */
export function parseTcpTarget(text: string): TcpTarget {
  const bad = () =>
    new AgentError(
      "usage",
      `--tcp ${JSON.stringify(text)} is not a port or HOST:PORT`,
      "for example --tcp 22, or --tcp 10.0.0.5:5432",
    );
  let host = "localhost";
  let portText = text;
  if (!PORT.test(text)) {
    const match = HOST_PORT.exec(text);
    if (!match) throw bad();
    host = match[1]!.replace(/^\[|\]$/g, "");
    portText = match[2]!;
  }
  const port = Number(portText);
  if (!(port >= 1 && port <= 65535)) throw bad();
  return { host, port, label: `${host.includes(":") ? `[${host}]` : host}:${port}` };
}

/** What `--tcp` serves: each visitor's connection, a connection to the target. */
export function tcpService(target: TcpTarget): LinkService {
  return { label: `tcp ${target.label}`, streams: (send, log) => new TcpForwarder(target, send, log) };
}

/** A TCP tunnel's keys, and how the agent got them (for the line it prints). */
export interface ConnectKeys {
  keys: string[];
  /** A key the agent made on this run: printed once, with the command to hand out. */
  made?: string;
  /** Where the agent keeps the key it made. */
  file?: string;
}

/**
 * The keys of a TCP tunnel: `--connect-key-file` (one per line, blank lines and # comments
 * skipped), or else the one the agent keeps for this relay and name, made on first use
 * (claims' directory, keys/, the file only its user reads). A random name gets a fresh key each run.
 * @throws {AgentError} "usage" for a key file that cannot be read, holds no key or a short one.
 */
export function connectKeys(file: string | undefined, relay: URL, name: string, named: boolean, runtime: Runtime): ConnectKeys {
  if (file !== undefined) {
    const text = readUserFile(file, runtime, `the connect key file ${file}`, "give a file with one key per line");
    const keys = text
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith("#"));
    if (keys.length === 0) {
      throw new AgentError(
        "usage",
        `the connect key file ${file} holds no key`,
        "put one key per line (make one with: openssl rand -base64 24)",
      );
    }
    const short = keys.find((key) => key.length < 16);
    if (short !== undefined) {
      throw new AgentError(
        "usage",
        `a key in ${file} is ${short.length} characters; keys need at least 16`,
        "make one with: openssl rand -base64 24",
      );
    }
    return { keys };
  }
  const directory = burrowDirectory((n) => runtime.env(n));
  if (!named || !directory) return { keys: [randomId(24)], made: "" };
  const keyFile = claimFile(join(directory, "keys"), relay, name);
  try {
    const kept = readFileSync(keyFile, "utf8").trim();
    if (kept) return { keys: [kept], file: keyFile };
  } catch {
    // none yet
  }
  const made = randomId(24);
  try {
    mkdirSync(join(directory, "keys"), { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, `${made}\n`, { mode: 0o600 });
    chmodSync(keyFile, 0o600);
    return { keys: [made], made, file: keyFile };
  } catch {
    return { keys: [made], made };
  }
}

/** The lines an agent prints about its TCP tunnel's key: the command to hand out, or where the key is. */
export function announceKeys(keys: ConnectKeys, name: string, relay: URL, log: Log): void {
  const relayFlag = relay.origin === "http://localhost:8787" ? "" : ` --relay ${relay.origin}`;
  if (keys.made !== undefined) {
    const kept = keys.file ? ` (kept in ${keys.file})` : " (a new one each run: give --name to keep it)";
    log.result(
      `visitors connect with: BURROW_CONNECT_KEY=${keys.made} agent connect ${name}${relayFlag} --listen 127.0.0.1:2222${kept}`,
      "connect-key",
      { name, file: keys.file },
    );
  } else if (keys.file) {
    log.info(
      `visitors connect with the key in ${keys.file}: BURROW_CONNECT_KEY=$(cat ${keys.file}) agent connect ${name}${relayFlag} --listen 127.0.0.1:2222`,
      "connect-key",
      {
        name,
        file: keys.file,
      },
    );
  }
}
