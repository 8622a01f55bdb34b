import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import tlsClient from "node:tls";
import { command, processTree } from "./_memory.ts";
import { Child, freePort, waitForListen } from "./_process.ts";

/** How a relay is run: on workerd (the Cloudflare relay), or self-hosted (`agent relay`) on a runtime. */
export type RelayLauncher = "wrangler" | "workerd" | "selfhost-node" | "selfhost-bun" | "selfhost-deno";

/**
 * The relay the test run is about (vitest.config.ts's projects set it): unset, the Cloudflare
 * relay; "selfhost-node" (say), that one in place of the Cloudflare relay for every test that
 * asks for the Cloudflare relay in either form ("wrangler" or "workerd", or no launcher).
 */
const RELAY_UNDER_TEST = process.env.TEST_RELAY as RelayLauncher | undefined;

/**
 * The launchers a test that compares the Cloudflare relay's two forms runs on: both of them,
 * or only the relay under test (TEST_RELAY) when that is the self-hosted one.
 */
export const RELAY_FORMS: readonly RelayLauncher[] = RELAY_UNDER_TEST?.startsWith("selfhost-")
  ? [RELAY_UNDER_TEST]
  : ["wrangler", "workerd"];

/**
 * What differs between the relays, for the few expectations that do (as crossws's adapters'
 * flags): each is a fact of the host, not of Burrow's code, which is the same core on both.
 */
export interface RelayCapabilities {
  /**
   * The visitor's address is the TCP peer the relay itself sees. Under `wrangler dev` it is
   * whatever CF-Connecting-IP the visitor sent, as wrangler dev's entry Worker passes it on
   * (production Cloudflare sets it itself); plain workerd and the self-hosted relay see the socket.
   */
  peerAddress: boolean;
  /**
   * A response of known length reaches the visitor with that Content-Length. Not on Bun: a
   * streamed Response body goes out chunked whatever its length (docs/relay-selfhosted.md).
   */
  contentLength: boolean;
  /**
   * A body that fails without a length (the origin died mid-body) reaches the visitor as an
   * aborted transfer. Not on workerd, which ends such a chunked response cleanly
   * (cloudflare/workerd#6818).
   */
  abortsChunkedBody: boolean;
}

/** The launcher a test asking for `asked` gets (see RELAY_UNDER_TEST). */
export function launcherFor(asked: RelayLauncher = "wrangler"): RelayLauncher {
  return RELAY_UNDER_TEST?.startsWith("selfhost-") && !asked.startsWith("selfhost-") ? RELAY_UNDER_TEST : asked;
}

/** What the relay `launcherFor(asked)` starts can do, known before it starts (for it.fails and skips). */
export function capabilitiesOf(asked?: RelayLauncher): RelayCapabilities {
  const launcher = launcherFor(asked);
  const cloudflare = !launcher.startsWith("selfhost-");
  return {
    peerAddress: launcher !== "wrangler",
    contentLength: launcher !== "selfhost-bun",
    abortsChunkedBody: !cloudflare,
  };
}

export const ROOT = resolve(import.meta.dirname, "..");

export interface RelayOptions {
  /** wrangler.toml vars to override, e.g. { RESPONSE_TIMEOUT_SECONDS: "2" }. */
  vars?: Record<string, string>;
  /**
   * "wrangler": `wrangler dev`, what users run (default). "workerd": `workerd serve` with the
   * bundle `wrangler deploy` would upload, no dev tooling in front: closest to production.
   * "selfhost-node", "selfhost-bun", "selfhost-deno": `agent relay` on that runtime, with the
   * vars as environment variables, `--base-domain localhost` unless vars say otherwise, and a
   * data directory kept across restart(). Under TEST_RELAY=selfhost-<runtime>, "wrangler" and
   * "workerd" mean that relay instead (the "selfhost" project of vitest.config.ts).
   */
  launcher?: RelayLauncher;
  /** Self-hosted only: more flags for `agent relay` (--tls-cert, --trust-proxy...). */
  args?: string[];
  /** Another Worker to run the same way (the benchmark's Durable Object floor). */
  config?: string;
  /**
   * TLS on `address` (e.g. "10.201.0.1:443"), with the PEM files `cert` (chain) and `key`, besides
   * plain http on 127.0.0.1:`port`. workerd serves both sockets. `agent relay` serves one: it
   * serves TLS on `address`, and the plain-http port is a door in the test process that passes
   * each connection on to it through TLS (the relay sees the visitor at `address`' own IP).
   */
  tls?: { address: string; cert: string; key: string };
  /** workerd only: serve the V8 inspector (DevTools protocol) on 127.0.0.1:`inspector`, for CPU profiles. */
  inspector?: number;
}

/** A real relay: the Worker and its Durable Objects on workerd (through `wrangler dev` by default), or `agent relay`. */
export class Relay {
  private child: Child | undefined;
  private stoppedOutput = "";
  /** Self-hosted with `tls`: the plain-http port, passed on to the relay's TLS listener. */
  private door: net.Server | undefined;
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
    const launcher = launcherFor(options.launcher);
    const relay = new Relay(await freePort(), await freePort(), { ...options, launcher, vars });
    await relay.launch();
    return relay;
  }

  /** How this relay runs. */
  get launcher(): RelayLauncher {
    return this.options.launcher!;
  }

  /** Where it runs: on workerd (`wrangler dev` or `workerd serve`), or as `agent relay`. */
  get host(): "cloudflare" | "selfhost" {
    return this.launcher.startsWith("selfhost-") ? "selfhost" : "cloudflare";
  }

  /** What this relay can do that the other cannot: see RelayCapabilities. */
  get can(): RelayCapabilities {
    return capabilitiesOf(this.launcher);
  }

  /**
   * The processes that hold the relay's memory: workerd's, or the runtime's that runs `agent
   * relay` (for `deno task`, the `deno run` it starts).
   */
  processes(): number[] {
    const tree = processTree(this.pid);
    if (this.host === "cloudflare") return tree.filter((pid) => command(pid) === "workerd");
    return tree.filter((pid) => /^(node|bun|deno)$/.test(command(pid))).slice(-1);
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

  /** Lines the running relay printed so far: `from` for waitFor. */
  get lineCount(): number {
    return this.child?.lines.length ?? 0;
  }

  /** Waits for a line of the running relay's output (from line `from` on) that matches `pattern`. */
  waitFor(pattern: RegExp, options?: { from?: number; timeoutMs?: number }): Promise<RegExpExecArray> {
    if (!this.child) throw new Error("the relay is not running");
    return this.child.waitFor(pattern, options);
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
    await new Promise((resolve) => (this.door ? this.door.close(resolve) : resolve(undefined)));
    rmSync(this.persist, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    if (this.options.launcher === "workerd") return this.launchWorkerd();
    if (this.options.launcher!.startsWith("selfhost-")) return this.launchSelfhost();
    if (this.options.tls) throw new Error('a relay with tls needs launcher: "workerd" or a self-hosted one');
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
    const runtime = this.options.launcher!.slice("selfhost-".length) as "node" | "bun" | "deno";
    const { tls } = this.options;
    const listen = tls ? tlsListen(tls) : ["--port", String(this.port), "--host", "127.0.0.1"];
    const args = [...listen, "--data", this.dataDir, ...(this.options.args ?? [])];
    const [command, argv] = relayCommand(runtime, args);
    // As wrangler.toml's [vars]: tunnels at <name>.localhost. No BURROW_* of the test's own.
    const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
    this.child = new Child(`relay:${runtime}`, command, argv, {
      cwd: ROOT,
      env: { ...base, BASE_DOMAIN: "localhost", ...this.options.vars },
    });
    await this.child.waitFor(/^relay \| listening on /, { timeoutMs: 30_000 });
    if (tls && !this.door) this.door = await tlsDoor(this.port, tls);
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

/** `agent relay`'s flags for serving TLS on `address` ("10.201.0.1:443", "[fd00::1]:443"). */
function tlsListen(tls: NonNullable<RelayOptions["tls"]>): string[] {
  const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(tls.address)!;
  return ["--host", host!, "--port", port!, "--tls-cert", tls.cert, "--tls-key", tls.key];
}

/** A plain-http port on 127.0.0.1 whose connections go on to the relay's TLS listener. */
async function tlsDoor(port: number, tls: NonNullable<RelayOptions["tls"]>): Promise<net.Server> {
  const [, host, relayPort] = /^\[?(.*?)\]?:(\d+)$/.exec(tls.address)!;
  const door = net.createServer((visitor) => {
    // The test's own hop to its own relay: the agents are what checks the relay's certificate.
    const relay = tlsClient.connect({ host, port: Number(relayPort), rejectUnauthorized: false });
    visitor.pipe(relay).pipe(visitor);
    visitor.on("error", () => relay.destroy());
    relay.on("error", () => visitor.destroy());
  });
  await new Promise<void>((resolve, reject) => door.once("error", reject).listen(port, "127.0.0.1", resolve));
  return door;
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
