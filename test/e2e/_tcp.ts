// What the TCP tunnel's end-to-end files share: `agent connect` as a shell command line (ssh's
// ProxyCommand, git's core.sshCommand), ssh and scp through it to the test's sshd, key files,
// and a raw service that answers only once its client has half-closed.
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AgentRuntime, agentCommand, type RuntimeName } from "../_agent.ts";
import { ROOT } from "../_relay.ts";
import { type RunResult, type Sshd, sshRun } from "../_services.ts";
import { shellQuote } from "../_tmux.ts";

/** A folder of the test's own (keys, files to copy). */
export function scratch(): string {
  return mkdtempSync(join(tmpdir(), "burrow-tcp-"));
}

/** A connect key file in `dir`: one key per line, as --connect-key-file and --key-file read it. */
export function keyFile(dir: string, name: string, ...keys: string[]): string {
  const file = join(dir, name);
  writeFileSync(file, `${keys.join("\n")}\n`, { mode: 0o600 });
  return file;
}

/**
 * `agent ...args` on `runtime` as one sh command line, run where the runtime's agents run
 * (`deno task` needs the clone) with the launcher's variables, no BURROW_* of the test's own
 * (as AgentProcess), and `env` added. GNU env's -C: ssh runs a ProxyCommand as `exec <line>`.
 */
export function agentLine(runtime: AgentRuntime, args: string[], env: Record<string, string> = {}): string {
  const launcher = typeof runtime === "string" ? undefined : runtime;
  const [command, argv] = launcher ? launcher.command(args) : agentCommand(runtime as RuntimeName, args);
  const unset = Object.keys(process.env)
    .filter((key) => key.startsWith("BURROW_"))
    .flatMap((key) => ["-u", key]);
  const vars = Object.entries({ ...launcher?.env, ...env }).map(([key, value]) => `${key}=${value}`);
  return ["env", "-C", launcher?.cwd ?? ROOT, ...unset, ...vars, command, ...argv].map(shellQuote).join(" ");
}

/** The documented ProxyCommand: `agent connect %n --stdio --relay R --key-file F`. */
export function proxyCommand(
  runtime: AgentRuntime,
  relay: { url: string },
  key: { file?: string; env?: Record<string, string> } = {},
): string {
  const args = ["connect", "%n", "--stdio", "--relay", relay.url, ...(key.file ? ["--key-file", key.file] : [])];
  return agentLine(runtime, args, key.env);
}

/** ssh, scp and git to the test's sshd as the tunnel `name`, through `proxy` (a ProxyCommand). */
export class TunnelSsh {
  constructor(
    readonly sshd: Sshd,
    readonly name: string,
    readonly proxy: string,
  ) {}

  /** ssh's options: the test key, no prompts, and the ProxyCommand. */
  get options(): string[] {
    return [...this.sshd.sshOptions, "-o", `ProxyCommand=${this.proxy}`];
  }

  /** `user@NAME`: ssh passes NAME to the ProxyCommand as %n and never resolves it. */
  get target(): string {
    return `${this.sshd.user}@${this.name}`;
  }

  /** `ssh ...options` as one sh command line, for GIT_SSH_COMMAND, rsync -e and terminals. */
  get command(): string {
    return ["ssh", ...this.options].map(shellQuote).join(" ");
  }

  ssh(command: string, options?: { input?: string | Uint8Array; timeoutMs?: number }): Promise<RunResult> {
    return sshRun("ssh", [...this.options, this.target, command], options);
  }

  scp(from: string, to: string, timeoutMs = 60_000): Promise<RunResult> {
    return sshRun("scp", [...this.options, from, to], { timeoutMs });
  }

  /** `user@NAME:path`, for scp and git. */
  remote(path: string): string {
    return `${this.target}:${path}`;
  }
}

/** A TCP service that reads until its client's EOF, then answers with what it read and closes. */
export interface AfterEofServer {
  port: number;
  /** What it answers for `bytes`. */
  answerFor(bytes: Uint8Array): string;
  close(): Promise<void>;
}

/**
 * Starts the after-EOF service on 127.0.0.1: it answers only once the client's half-close has
 * reached it, so an answer proves the EOF travelled and the other direction stayed open.
 */
export async function startAfterEofServer(): Promise<AfterEofServer> {
  const answerFor = (bytes: Uint8Array) =>
    `read ${bytes.byteLength} bytes, sha256 ${createHash("sha256").update(bytes).digest("hex")}\n`;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => socket.end(answerFor(Buffer.concat(chunks))));
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    answerFor,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
