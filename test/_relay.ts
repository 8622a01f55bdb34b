import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Child, freePort, waitForListen } from "./_process.ts";

/** How a relay is run: on workerd (the Cloudflare relay), or self-hosted (`agent relay`) on a runtime. */
export type RelayLauncher = "wrangler" | "workerd" | "selfhost-node" | "selfhost-bun" | "selfhost-deno";

export const ROOT = resolve(import.meta.dirname, "..");

export interface RelayOptions {
  /** wrangler.toml vars to override, e.g. { RESPONSE_TIMEOUT_SECONDS: "2" }. */
  vars?: Record<string, string>;
  /**
   * "wrangler": `wrangler dev`, what users run (default). "workerd": `workerd serve` with the
   * bundle `wrangler deploy` would upload, no dev tooling in front: closest to production.
   * "selfhost-node", "selfhost-bun", "selfhost-deno": `agent relay` on that runtime, with the
   * vars as environment variables, `--base-domain localhost` unless vars say otherwise, and a
   * data directory kept across restart().
   */
  launcher?: RelayLauncher;
  /** Self-hosted only: more flags for `agent relay` (--tls-cert, --trust-proxy...). */
  args?: string[];
  /** Another Worker to run the same way (the benchmark's Durable Object floor). */
  config?: string;
  /**
   * workerd only: a second socket serving the same Worker over TLS on `address` (e.g.
   * "10.201.0.1:443"), with the PEM files `cert` (chain) and `key`, besides the plain-http one.
   */
  tls?: { address: string; cert: string; key: string };
  /** workerd only: serve the V8 inspector (DevTools protocol) on 127.0.0.1:`inspector`, for CPU profiles. */
  inspector?: number;
}

/** A real relay: the Worker and its Durable Objects on workerd (through `wrangler dev` by default), or `agent relay`. */
export class Relay {
  private child: Child | undefined;
  private stoppedOutput = "";
  private readonly persist = mkdtempSync(join(tmpdir(), "burrow-relay-"));

  private constructor(
    readonly port: number,
    private readonly inspectorPort: number,
    private readonly options: RelayOptions,
  ) {}

  private get config(): string {
    return this.options.config ?? join(ROOT, "wrangler.toml");
  }

  static async start(options: RelayOptions = {}): Promise<Relay> {
    // Test files start agents by the dozen a minute, all from 127.0.0.1 (or, under plain
    // workerd in a network namespace, from one address): far above the relay's default of 60
    // connection attempts a minute. Their visitors, hundreds of them at once in some tests,
    // come from that one address too: far above a visitor's share of a tunnel's streams
    // (MAX_STREAMS_PER_VISITOR). A test of a limit sets its var itself.
    const vars = { CONNECTS_PER_MINUTE: "100000", MAX_STREAMS_PER_VISITOR: "100000", ...options.vars };
    // TEST_RELAY=selfhost-node (say) runs the tests that take the default relay on that one.
    const launcher = options.launcher ?? (process.env.TEST_RELAY as RelayLauncher | undefined);
    const relay = new Relay(await freePort(), await freePort(), { ...options, launcher, vars });
    await relay.launch();
    return relay;
  }

  /** The URL agents are given, as a user would write it. */
  get url(): string {
    const tls = this.options.args?.includes("--tls-cert");
    return `${tls ? "https" : "http"}://localhost:${this.port}`;
  }

  /** Self-hosted: the relay's --data directory, kept across restart(). */
  get dataDir(): string {
    return join(this.persist, "data");
  }

  /** The wrangler process; workerd runs under it. */
  get pid(): number {
    return this.child!.pid;
  }

  /** What the relay printed, this run's or, once stopped, the last run's. */
  get output(): string {
    return this.child?.output ?? this.stoppedOutput;
  }

  /**
   * Stops workerd, as a redeploy (SIGTERM: workerd lets requests in flight finish first) or a
   * crash (SIGKILL) would; Durable Object storage is kept.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const status = (await this.child?.stop(signal)) ?? null;
    this.stoppedOutput = this.child?.output ?? this.stoppedOutput;
    this.child = undefined;
    return status;
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

  /** Starts again on the same port with the same storage, after `stop(signal)`. */
  async restart(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.stop(signal);
    await this.launch();
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.persist, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    if (this.options.launcher === "workerd") return this.launchWorkerd();
    if (this.options.launcher?.startsWith("selfhost-")) return this.launchSelfhost();
    if (this.options.tls) throw new Error('a relay with tls needs launcher: "workerd"');
    const vars = Object.entries(this.options.vars ?? {}).flatMap(([key, value]) => ["--var", `${key}:${value}`]);
    this.child = new Child(
      "relay",
      process.execPath,
      [
        join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
        "dev",
        `--config=${this.config}`,
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

  private async launchSelfhost(): Promise<void> {
    if (this.options.tls) throw new Error('a self-hosted relay serves TLS with args: ["--tls-cert", FILE, "--tls-key", FILE]');
    const runtime = this.options.launcher!.slice("selfhost-".length) as "node" | "bun" | "deno";
    const args = ["--port", String(this.port), "--host", "127.0.0.1", "--data", this.dataDir, ...(this.options.args ?? [])];
    const [command, argv] = relayCommand(runtime, args);
    // As wrangler.toml's [vars]: tunnels at <name>.localhost. No BURROW_* of the test's own.
    const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
    this.child = new Child(`relay:${runtime}`, command, argv, {
      cwd: ROOT,
      env: { ...base, BASE_DOMAIN: "localhost", ...this.options.vars },
    });
    await this.child.waitFor(/^relay \| listening on /, { timeoutMs: 30_000 });
  }

  private async launchWorkerd(): Promise<void> {
    const config = join(this.persist, "relay.capnp");
    const storage = join(this.persist, "storage");
    mkdirSync(storage, { recursive: true });
    const toml = readFileSync(this.config, "utf8");
    copyFileSync(bundle(this.config), join(this.persist, "index.js")); // capnp embeds paths relative to the config
    const { tls } = this.options;
    if (tls) {
      copyFileSync(tls.cert, join(this.persist, "tls-cert.pem"));
      copyFileSync(tls.key, join(this.persist, "tls-key.pem"));
    }
    const vars = { ...wranglerVars(toml), ...this.options.vars };
    writeFileSync(config, workerdConfig(toml, "index.js", this.port, storage, vars, tls?.address));
    this.child = new Child(
      "relay",
      join(ROOT, "node_modules/.bin/workerd"),
      [
        "serve",
        "--experimental",
        ...(this.options.inspector ? [`--inspector-addr=127.0.0.1:${this.options.inspector}`] : []),
        config,
      ],
      {
        cwd: this.persist,
      },
    );
    await waitForListen(this.child, this.port);
    if (tls) {
      const match = /^(.*):(\d+)$/.exec(tls.address);
      const host = (match?.[1] ?? tls.address).replace(/^\[|\]$/g, "");
      await waitForListen(this.child, Number(match?.[2] ?? 443), host);
    }
  }
}

/** `agent relay` as a user runs it on each runtime (docs/relay-selfhosted.md), as argv. */
export function relayCommand(runtime: "node" | "bun" | "deno", args: string[]): [string, string[]] {
  const bin = join(ROOT, "node_modules/.bin");
  switch (runtime) {
    case "node":
      return [process.execPath, [join(ROOT, "agent/bin/agent.js"), "relay", ...args]];
    case "bun":
      return [join(bin, "bun"), [join(ROOT, "agent/bin/agent.js"), "relay", ...args]];
    case "deno":
      return [join(bin, "deno"), ["task", "--quiet", "relay", ...args]];
  }
}

const bundled = new Map<string, string>();

/** The Worker exactly as `wrangler deploy` would upload it (built once per process). */
function bundle(config: string): string {
  const done = bundled.get(config);
  if (done) return done;
  const outdir = mkdtempSync(join(tmpdir(), "burrow-bundle-"));
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--config", config, "--outdir", outdir],
    {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      stdio: "ignore",
    },
  );
  // Named after the Worker's main module.
  const main = readdirSync(outdir).find((file) => file.endsWith(".js"))!;
  bundled.set(config, join(outdir, main));
  return bundled.get(config)!;
}

/** The [vars] of wrangler.toml (flat string values only, which is all it has). */
function wranglerVars(toml: string): Record<string, string> {
  const section = /^\[vars\]\n([\s\S]*?)(?:^\[|$(?![\s\S]))/m.exec(toml)?.[1] ?? "";
  return Object.fromEntries([...section.matchAll(/^(\w+)\s*=\s*"([^"]*)"/gm)].map((m) => [m[1]!, m[2]!]));
}

function wranglerCompatibility(toml: string): { date: string; flags: string[] } {
  const date = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(toml)![1]!;
  const flags = [...(/^compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(toml)?.[1]?.matchAll(/"([^"]+)"/g) ?? [])].map((m) => m[1]!);
  return { date, flags };
}

/**
 * A workerd config serving the relay bundle with its Durable Objects on local disk, and over TLS
 * on `tlsAddress` too when given (with tls-cert.pem and tls-key.pem beside the config).
 */
function workerdConfig(
  toml: string,
  bundlePath: string,
  port: number,
  storage: string,
  vars: Record<string, string>,
  tlsAddress?: string,
): string {
  const { date, flags } = wranglerCompatibility(toml);
  // The Durable Object bindings of the wrangler.toml.
  const classes = [
    ...toml.matchAll(/^\[\[durable_objects\.bindings\]\]\s*\nname\s*=\s*"(\w+)"\s*\nclass_name\s*=\s*"(\w+)"/gm),
  ].map((m) => [m[1]!, m[2]!] as const);
  const bindings = Object.entries(vars).map(
    ([name, value]) => `(name = ${JSON.stringify(name)}, text = ${JSON.stringify(value)})`,
  );
  for (const [name, className] of classes) bindings.push(`(name = "${name}", durableObjectNamespace = "${className}")`);
  const sockets = [`(name = "http", address = "127.0.0.1:${port}", http = (), service = "relay")`];
  if (tlsAddress) {
    const keypair = `keypair = (privateKey = embed "tls-key.pem", certificateChain = embed "tls-cert.pem")`;
    sockets.push(
      `(name = "https", address = ${JSON.stringify(tlsAddress)}, https = (options = (), tlsOptions = (${keypair})), service = "relay")`,
    );
  }
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "relay", worker = .relay), (name = "storage", disk = (path = ${JSON.stringify(storage)}, writable = true)) ],
  sockets = [ ${sockets.join(", ")} ],
);
const relay :Workerd.Worker = (
  modules = [ (name = "index.js", esModule = embed ${JSON.stringify(bundlePath)}) ],
  compatibilityDate = ${JSON.stringify(date)},
  compatibilityFlags = [${flags.map((f) => JSON.stringify(f)).join(", ")}],
  bindings = [ ${bindings.join(", ")} ],
  durableObjectNamespaces = [ ${classes.map(([, className]) => `(className = "${className}", uniqueKey = "${className}", enableSql = true)`).join(", ")} ],
  durableObjectStorage = (localDisk = "storage"),
);
`;
}
