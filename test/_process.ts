import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";

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
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
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
