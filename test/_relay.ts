import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Child, freePort } from "./_process.ts";

export const ROOT = resolve(import.meta.dirname, "..");

export interface RelayOptions {
  /** wrangler.toml vars to override, e.g. { RESPONSE_TIMEOUT_SECONDS: "2" }. */
  vars?: Record<string, string>;
}

/** A real relay: the Worker and its Durable Objects on workerd, through `wrangler dev`. */
export class Relay {
  private child: Child | undefined;
  private readonly persist = mkdtempSync(join(tmpdir(), "burrow-relay-"));

  private constructor(
    readonly port: number,
    private readonly inspectorPort: number,
    private readonly options: RelayOptions,
  ) {}

  static async start(options: RelayOptions = {}): Promise<Relay> {
    const relay = new Relay(await freePort(), await freePort(), options);
    await relay.launch();
    return relay;
  }

  /** The URL agents are given, as a user would write it. */
  get url(): string {
    return `http://localhost:${this.port}`;
  }

  get output(): string {
    return this.child?.output ?? "";
  }

  /** Stops workerd, as a crash or a redeploy would; Durable Object storage is kept. */
  async stop(): Promise<void> {
    await this.child?.stop("SIGTERM");
    this.child = undefined;
  }

  /**
   * Freezes workerd (SIGSTOP): connections stay open but nothing answers, as when a proxy or
   * NAT silently drops a connection. `thaw()` resumes it.
   */
  freeze(): void {
    this.child?.signalGroup("SIGSTOP");
  }

  thaw(): void {
    this.child?.signalGroup("SIGCONT");
  }

  /** Starts again on the same port with the same storage. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.persist, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const vars = Object.entries(this.options.vars ?? {}).flatMap(([key, value]) => ["--var", `${key}:${value}`]);
    this.child = new Child(
      "relay",
      process.execPath,
      [
        join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
        "dev",
        "--ip=127.0.0.1",
        `--port=${this.port}`,
        `--inspector-port=${this.inspectorPort}`,
        `--persist-to=${this.persist}`,
        "--show-interactive-dev-session=false",
        ...vars,
      ],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" } },
    );
    await this.child.waitFor(/Ready on http/, { timeoutMs: 60_000 });
  }
}
