import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Child, freePort } from "./_process.ts";

export const ROOT = resolve(import.meta.dirname, "..");

export interface RelayOptions {
  /** wrangler.toml vars to override, e.g. { RESPONSE_TIMEOUT_SECONDS: "2" }. */
  vars?: Record<string, string>;
  /**
   * "wrangler": `wrangler dev`, what users run (default). "workerd": `workerd serve` with the
   * bundle `wrangler deploy` would upload, no dev tooling in front: closest to production.
   */
  launcher?: "wrangler" | "workerd";
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

  /** The wrangler process; workerd runs under it. */
  get pid(): number {
    return this.child!.pid;
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
    if (this.options.launcher === "workerd") return this.launchWorkerd();
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

  private async launchWorkerd(): Promise<void> {
    const config = join(this.persist, "relay.capnp");
    const storage = join(this.persist, "storage");
    mkdirSync(storage, { recursive: true });
    copyFileSync(bundle(), join(this.persist, "index.js")); // capnp embeds paths relative to the config
    writeFileSync(config, workerdConfig("index.js", this.port, storage, { ...wranglerVars(), ...this.options.vars }));
    this.child = new Child("relay", join(ROOT, "node_modules/.bin/workerd"), ["serve", "--experimental", config], {
      cwd: this.persist,
    });
    await waitForPort(this.port, this.child);
  }
}

let bundled: string | undefined;

/** The Worker exactly as `wrangler deploy` would upload it (built once per process). */
function bundle(): string {
  if (bundled) return bundled;
  const outdir = mkdtempSync(join(tmpdir(), "burrow-bundle-"));
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", outdir],
    {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      stdio: "ignore",
    },
  );
  bundled = join(outdir, "index.js");
  return bundled;
}

/** The [vars] of wrangler.toml (flat string values only, which is all it has). */
function wranglerVars(): Record<string, string> {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const section = /^\[vars\]\n([\s\S]*?)(?:^\[|$(?![\s\S]))/m.exec(toml)?.[1] ?? "";
  return Object.fromEntries([...section.matchAll(/^(\w+)\s*=\s*"([^"]*)"/gm)].map((m) => [m[1]!, m[2]!]));
}

function wranglerCompatibility(): { date: string; flags: string[] } {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)![1]!;
  const flags = [...(/^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(toml)?.[1]?.matchAll(/"([^"]+)"/g) ?? [])].map((m) => m[1]!);
  return { date, flags };
}

/** A workerd config serving the relay bundle with its Durable Objects on local disk. */
function workerdConfig(bundlePath: string, port: number, storage: string, vars: Record<string, string>): string {
  const { date, flags } = wranglerCompatibility();
  const bindings = Object.entries(vars).map(
    ([name, value]) => `(name = ${JSON.stringify(name)}, text = ${JSON.stringify(value)})`,
  );
  bindings.push(`(name = "TUNNELS", durableObjectNamespace = "TunnelObject")`);
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "relay", worker = .relay), (name = "storage", disk = (path = ${JSON.stringify(storage)}, writable = true)) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "relay") ],
);
const relay :Workerd.Worker = (
  modules = [ (name = "index.js", esModule = embed ${JSON.stringify(bundlePath)}) ],
  compatibilityDate = ${JSON.stringify(date)},
  compatibilityFlags = [${flags.map((f) => JSON.stringify(f)).join(", ")}],
  bindings = [ ${bindings.join(", ")} ],
  durableObjectNamespaces = [ (className = "TunnelObject", uniqueKey = "burrow-tunnel", enableSql = true) ],
  durableObjectStorage = (localDisk = "storage"),
);
`;
}

/** Resolves once something accepts connections on `port`. */
async function waitForPort(port: number, child: Child): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`the relay did not listen on ${port}:\n${child.output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
