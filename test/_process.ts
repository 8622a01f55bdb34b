import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const DEBUG = process.env.TEST_DEBUG === "1";

/** A child process whose output is kept line by line (and echoed with TEST_DEBUG=1). */
export class Child {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly waiters = new Set<() => void>();
  private readonly process: ChildProcess;

  constructor(
    readonly label: string,
    command: string,
    args: string[],
    options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
  ) {
    // Own process group, so stopping it also stops what it spawned (wrangler's workerd).
    this.process = spawn(command, args, { ...options, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    for (const stream of [this.process.stdout!, this.process.stderr!]) {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop()!;
        for (const line of parts) this.push(line);
      });
      stream.on("end", () => partial && this.push(partial));
    }
    this.exited = new Promise((resolve) => this.process.on("exit", (code, signal) => resolve(code ?? (signal ? -1 : null))));
    void this.exited.then(() => this.notify());
  }

  get pid(): number {
    return this.process.pid!;
  }

  /** The exit status, -1 if killed by a signal, null while running. */
  get exitCode(): number | null {
    return this.process.exitCode ?? (this.process.signalCode ? -1 : null);
  }

  get output(): string {
    return this.lines.join("\n");
  }

  /** Resolves with the first match of `pattern` in a line printed after line `from`. */
  async waitFor(pattern: RegExp, { from = 0, timeoutMs = 30_000 } = {}): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    let index = from;
    for (;;) {
      for (; index < this.lines.length; index++) {
        const match = pattern.exec(this.lines[index]!);
        if (match) return match;
      }
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        throw new Error(`${this.label} exited before printing ${pattern}:\n${this.output}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label} did not print ${pattern} within ${timeoutMs}ms:\n${this.output}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.waiters.add(done);
      });
    }
  }

  /** Sends `signal` to the process (and its group) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 10_000): Promise<number | null> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.kill(signal);
      const timer = setTimeout(() => this.kill("SIGKILL"), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exited;
  }

  /** Signals the process and everything it spawned, without waiting. */
  signalGroup(signal: NodeJS.Signals): void {
    this.kill(signal);
  }

  /** Signals only the main process, as a terminal's Ctrl-C reaches a foreground program. */
  signal(signal: NodeJS.Signals): void {
    this.process.kill(signal);
  }

  private kill(signal: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, signal);
    } catch {
      // already gone
    }
  }

  private push(line: string): void {
    this.lines.push(line);
    if (DEBUG) console.log(`[${this.label}] ${line}`);
    this.notify();
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
    this.waiters.clear();
  }
}

/** A TCP port that was free a moment ago. */
/**
 * Ports for the servers tests start (relays, origins, proxies), below the kernel's ephemeral range
 * (net.ipv4.ip_local_port_range, 32768-60999 by default): a port the kernel hands out for
 * `listen(0)` is also what it picks as the source port of outgoing connections, so between
 * closing a probe socket and a child's bind (workerd's, a second later) any client connection
 * of the machine could take it ("Address already in use"). Below that range only listeners
 * compete, and a claim file per port keeps the processes of parallel test workers apart.
 */
const PORT_RANGE = { low: 20_000, high: 32_767 };
const PORT_CLAIMS = join(tmpdir(), "burrow-test-ports");
const claimedPorts = new Set<number>();
process.once("exit", () => {
  for (const port of claimedPorts) rmSync(join(PORT_CLAIMS, String(port)), { force: true });
});

/** Whether a process of this pid exists (EPERM: it does, as another user's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Claims `port` for this process; false when a live process holds it. */
function claimPort(port: number): boolean {
  const file = join(PORT_CLAIMS, String(port));
  try {
    writeFileSync(file, String(process.pid), { flag: "wx" });
    return true;
  } catch {
    const owner = Number(readFileSync(file, "utf8") || 0);
    if (owner && (owner === process.pid || processAlive(owner))) return false;
    rmSync(file, { force: true });
    try {
      writeFileSync(file, String(process.pid), { flag: "wx" });
      return true;
    } catch {
      return false; // another process took it meanwhile
    }
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A port on 127.0.0.1 that nothing listens on and no other test process will take. */
export async function freePort(): Promise<number> {
  mkdirSync(PORT_CLAIMS, { recursive: true });
  const span = PORT_RANGE.high - PORT_RANGE.low + 1;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const port = PORT_RANGE.low + ((start + i) % span);
    if (claimedPorts.has(port) || !claimPort(port)) continue;
    if (await bindable(port)) {
      claimedPorts.add(port);
      return port;
    }
    rmSync(join(PORT_CLAIMS, String(port)), { force: true });
  }
  throw new Error(`no free port in ${PORT_RANGE.low}-${PORT_RANGE.high}`);
}

/** Resolves once `host`:`port` accepts connections; fails if `child` exits or the time runs out. */
export async function waitForListen(child: Child, port: number, host = "127.0.0.1", timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, host, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (open) return;
    if (child.exitCode !== null) throw new Error(`${child.label} exited (${child.exitCode}) before listening:\n${child.output}`);
    if (Date.now() > deadline) throw new Error(`${child.label} did not listen on ${host}:${port}:\n${child.output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
