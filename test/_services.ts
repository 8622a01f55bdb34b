// Real TCP services on loopback for the TCP tunnel's tests and bench: Debian's OpenSSH server
// (test/_sshd.ts) and redis-server with redis-benchmark, each on a free port, started and
// stopped like the relay and the origin (test/_process.ts's Child: quiet unless TEST_DEBUG=1).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Child, freePort } from "./_process.ts";
import { findProgram } from "./_sshd.ts";

export * from "./_sshd.ts";

const NEEDED = ["sshd", "ssh", "scp", "ssh-keygen", "redis-server", "redis-benchmark"];

/**
 * For describe.skipIf: true, after a loud warning, when OpenSSH or Redis is not installed; with
 * BURROW_REQUIRE_CORP=1 (CI) it throws instead, as test/_corp.ts's skipCorp does.
 */
export function skipServices(what: string): boolean {
  const missing = NEEDED.filter((name) => !findProgram(name));
  if (missing.length === 0) return false;
  const message = [
    "",
    `!!! SKIPPING ${what}: missing ${missing.join(", ")}`,
    "!!! They need openssh-server, openssh-client, redis-server and redis-tools (apt-get install).",
    "",
  ].join("\n");
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
  return true;
}

/** A redis-server of the test's own, in memory only. */
export interface RedisServer {
  port: number;
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/**
 * Clients a server admits: redis-benchmark's 50 or 100 and whatever a test adds. Redis lowers it
 * itself (with a warning) when the open-files limit is lower; it needs 32 descriptors of its own.
 */
const MAX_CLIENTS = 1024;

/** Starts redis-server on 127.0.0.1 and a free port: no snapshots, no append-only file. */
export async function startRedis(): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "burrow-redis-"));
  const port = await freePort();
  const child = new Child("redis-server", "redis-server", [
    ...["--port", String(port), "--bind", "127.0.0.1", "--protected-mode", "no"],
    ...["--save", "", "--appendonly", "no", "--dir", dir, "--maxclients", String(MAX_CLIENTS)],
  ]);
  try {
    await child.waitFor(/Ready to accept connections/, { timeoutMs: 10_000 });
  } catch (error) {
    await child.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    port,
    pid: child.pid,
    output: () => child.output,
    async stop() {
      await child.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisBenchmarkOptions {
  host?: string;
  port: number;
  /** Parallel connections (-c); 50 by default, as redis-benchmark's own default. */
  clients?: number;
  /** Requests per test (-n). */
  requests?: number;
  /** redis-benchmark's -t: "get,set" by default. */
  tests?: string;
  timeoutMs?: number;
}

export interface RedisBenchmarkResult {
  /** Requests per second by test, as redis-benchmark names them ("GET", "SET"). */
  opsPerSecond: Record<string, number>;
  /**
   * Lines that report a failure (a refused or reset connection, an error from the server), plus
   * one for each test asked for that has no figure, plus one for a failed exit with neither.
   */
  errors: number;
  output: string;
}

/**
 * Runs `redis-benchmark -q --csv` against host:port and reads its CSV.
 * @throws {Error} when it has not finished within `timeoutMs` (it is killed first).
 */
export async function redisBenchmark(options: RedisBenchmarkOptions): Promise<RedisBenchmarkResult> {
  const { host = "127.0.0.1", port, clients = 50, requests = 100_000, tests = "get,set", timeoutMs = 120_000 } = options;
  const child = new Child("redis-benchmark", "redis-benchmark", [
    ...["-h", host, "-p", String(port), "-c", String(clients), "-n", String(requests), "-t", tests, "-q", "--csv"],
  ]);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void child.stop("SIGKILL");
  }, timeoutMs);
  // redis-benchmark 7.0 retries a refused connection forever, at full CPU: one is a failure.
  child.waitFor(/^Could not connect/, { timeoutMs }).then(
    () => child.stop("SIGKILL"),
    () => {},
  );
  const code = await child.exited;
  clearTimeout(timer);
  if (timedOut) throw new Error(`redis-benchmark did not finish within ${timeoutMs}ms:\n${child.output}`);
  const opsPerSecond: Record<string, number> = {};
  let errors = 0;
  for (const line of child.lines) {
    // "SET","98039.22","0.279",...: the header row has "rps" where the figure goes.
    const row = /^"([^"]+)","([\d.]+)"/.exec(line);
    if (row) opsPerSecond[row[1]!] = Number(row[2]);
    else if (/error|could not connect|closed|reset|refused|timeout/i.test(line)) errors++;
  }
  // A test's row may name more than the test ("MSET (10 keys)", "LRANGE_100 (first 100 elements)").
  const names = Object.keys(opsPerSecond);
  const missing = tests.split(",").filter((test) => !names.some((name) => name.startsWith(test.trim().toUpperCase())));
  errors += missing.length;
  if (code !== 0 && errors === 0) errors = 1;
  return { opsPerSecond, errors, output: child.output };
}
