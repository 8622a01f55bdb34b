import { readFileSync } from "node:fs";
import { MAX_RULES, RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import pkg from "../package.json" with { type: "json" };
import { Agent, type AgentOptions, type TransportChoice } from "./agent.ts";
import { CLAIM_ENV_VARS, loadClaim } from "./claims.ts";
import { type ConfigFile, type KeySpec, loadConfig, type Settings } from "./config.ts";
import { doctor } from "./doctor.ts";
import { AgentError } from "./errors.ts";
import { Recorder } from "./inspector/recorder.ts";
import { DEFAULT_INSPECT, parseInspect, parseKeep, startInspector } from "./inspector/server.ts";
import { Log, type LogMode } from "./log.ts";
import { randomName } from "./names.ts";
import type { NetConfig } from "./net/dial.ts";
import { PROXY_ENV_VARS, proxyFor } from "./net/proxy.ts";
import { type OriginSetup, readPem, setUpOrigin } from "./origin-setup.ts";
import { visitorRules } from "./rules.ts";
import type { Runtime } from "./runtime.ts";

interface Flag {
  name: string;
  env?: string;
  value?: string;
  default?: string;
  help: string;
  /** May be given more than once; every value is kept. */
  repeat?: true;
  /** The environment fallback does not apply when this other flag is given. */
  yieldsTo?: string;
  /** A one-letter alias: -h for --help. */
  short?: string;
  /** Only on the command line, never a key of the config file. */
  noFile?: true;
}

/** Every flag, once: parsing, environment fallbacks and --help all come from this table. */
const FLAGS: Flag[] = [
  {
    name: "port",
    env: "BURROW_PORT",
    value: "PORT",
    help: "port of the local server to expose (this, --origin or --dir is required)",
  },
  { name: "host", env: "BURROW_HOST", value: "HOST", default: "localhost", help: "host of the local server" },
  {
    name: "origin",
    value: "URL",
    help: "the local server as a URL instead of --port: http://10.0.0.5:8080, https://localhost:8443; only that host and port are reached",
  },
  { name: "dir", value: "DIR", help: "serve the files of this directory instead of a local server (index.html for a directory)" },
  {
    name: "host-header",
    value: "MODE",
    default: "rewrite",
    help: "the Host the local server sees: rewrite (its own host:port), preserve (the public host), or this VALUE",
  },
  { name: "origin-ca", value: "FILE", help: "trust the CA certificates in this PEM file for an https:// --origin" },
  { name: "origin-insecure", help: "do not verify an https:// --origin's certificate (a local dev server's self-signed one)" },
  { name: "relay", env: "BURROW_RELAY", value: "URL", default: "http://localhost:8787", help: "the Burrow relay to connect to" },
  { name: "name", env: "BURROW_NAME", value: "NAME", default: "a random name", help: "tunnel name: the subdomain visitors use" },
  {
    name: "token",
    env: "BURROW_TOKEN",
    value: "TOKEN",
    default: "none",
    help: "the relay's token, if it requires one; other users see it in `ps`: prefer --token-file or the variable",
    yieldsTo: "token-file",
  },
  { name: "token-file", value: "FILE", help: "read the token from the first line of this file" },
  {
    name: "basic-auth",
    value: "USER:PASSWORD",
    repeat: true,
    help: `let in only visitors who log in as one of these users (the relay sees a hash, not the password; up to ${MAX_RULES})`,
  },
  {
    name: "allow-ip",
    value: "CIDR",
    repeat: true,
    help: `let in only visitors from these addresses: 203.0.113.0/24, 2001:db8::/32, 198.51.100.7 (up to ${MAX_RULES})`,
  },
  {
    name: "verify-webhook",
    value: "KIND:SECRET",
    repeat: true,
    help: "let in only requests signed with this secret: github:SECRET (X-Hub-Signature-256) or hmac-sha256:HEADER:SECRET",
  },
  {
    name: "heartbeat",
    env: "BURROW_HEARTBEAT",
    value: "SECONDS",
    default: "20",
    help: "seconds between heartbeats to the relay; a connection silent for 2.5 of them is given up (shorter: a silent cut is noticed sooner, for more traffic)",
  },
  {
    name: "proxy",
    value: "URL",
    default: "$HTTPS_PROXY unless $NO_PROXY",
    help: "HTTP proxy: http://user:password@host:port, or none",
  },
  { name: "ca", value: "FILE", help: "also trust the CA certificates in this PEM file (and $NODE_EXTRA_CA_CERTS)" },
  { name: "insecure", help: "do not verify the relay's certificate (unsafe; prefer --ca)" },
  {
    name: "transport",
    env: "BURROW_TRANSPORT",
    value: "MODE",
    default: "auto",
    help: "auto (WebSocket, else HTTPS requests), websocket or https",
  },
  {
    name: "log",
    env: "BURROW_LOG",
    value: "MODE",
    default: "auto",
    help: "auto (a live console on a terminal, else plain lines), plain, or json (one object per line)",
  },
  { name: "quiet", help: "print only warnings and errors" },
  {
    name: "inspect",
    value: "[HOST:]PORT",
    default: DEFAULT_INSPECT,
    help: "serve the inspector (recent requests, replay) there, or on the next free port; false: none; a HOST other than loopback lets other machines in",
  },
  { name: "inspect-keep", value: "N", default: "100", help: "requests the inspector keeps, each body up to 64 KiB each way" },
  { name: "debug", env: "BURROW_DEBUG", help: "print details and stack traces" },
  {
    name: "config",
    value: "FILE",
    default: "burrow.toml if there is one",
    help: "read settings and [[tunnel]] tables from this TOML file",
    noFile: true,
  },
  { name: "version", short: "v", help: "print the version and exit", noFile: true },
  { name: "help", short: "h", help: "print this help and exit", noFile: true },
];

/** The keys a config file may hold. */
const FILE_KEYS: KeySpec[] = FLAGS.filter((flag) => !flag.noFile).map((flag) => ({
  name: flag.name,
  value: flag.value !== undefined,
  repeat: flag.repeat === true,
}));

/** Every environment variable the agent reads (Deno's task grants exactly these). */
export const ENV_VARS = [
  ...FLAGS.flatMap((flag) => (flag.env ? [flag.env] : [])),
  ...PROXY_ENV_VARS,
  "NODE_EXTRA_CA_CERTS",
  ...CLAIM_ENV_VARS,
];

export const VERSION: string = pkg.version;

function help(): string {
  const rows = FLAGS.map((flag) => {
    const left = `  ${flag.short ? `-${flag.short}, ` : ""}--${flag.name}${flag.value ? ` ${flag.value}` : ""}`;
    const extra = [flag.repeat && "repeatable", flag.env && `env ${flag.env}`, flag.default && `default: ${flag.default}`]
      .filter(Boolean)
      .join("; ");
    return `${left.padEnd(32)}${flag.help}${extra ? ` (${extra})` : ""}`;
  });
  return [
    "Burrow agent: expose a local server through a Burrow relay.",
    "",
    "Usage: agent --port 8000 [--name NAME] [--relay URL]",
    "       agent --origin https://localhost:8443 --origin-insecure | --dir ./public",
    "       agent [--config FILE]    the tunnels of burrow.toml's [[tunnel]] tables",
    "       agent doctor [--relay URL] [--proxy URL] [--ca FILE]    checks the way to the relay",
    "",
    "Options:",
    ...rows,
    "",
    "Settings come from the flags, else the config file (the same keys without the dashes, and",
    "[[tunnel]] tables of name, port, host, origin, dir, host-header, origin-ca, origin-insecure",
    "and the access rules), else the environment variables, else the defaults.",
    "",
  ].join("\n");
}

/** Parsed settings: the last value of each flag, every value of the repeatable ones, and the tunnels. */
export interface Args extends Settings {
  /** One per tunnel to open, each with every setting that applies to it. */
  tunnels: Settings[];
}

/** Keys that say where one tunnel's traffic goes: a layer that has one of them decides. */
const ORIGIN_KEYS = ["port", "origin", "dir"];

/**
 * Reads flags, then the config file (--config, or burrow.toml here), then environment
 * variables, then defaults.
 * @throws {AgentError} "usage" for an unknown flag, a bad value or a bad config file.
 */
export function parseArgs(
  argv: string[],
  env: (name: string) => string | undefined,
  load: (path: string | undefined) => ConfigFile | undefined = (path) => loadConfig(path, FILE_KEYS),
): Args {
  const flags: Settings = { values: {}, lists: {} };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const short = /^-([a-z])$/.exec(arg)?.[1];
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(short ? `--${FLAGS.find((f) => f.short === short)?.name}` : arg);
    const flag = match && FLAGS.find((f) => f.name === match[1]);
    if (!flag) {
      throw new AgentError("usage", `unknown argument ${JSON.stringify(arg)}`, "run `agent --help` for the flags");
    }
    if (!flag.value) {
      flags.values[flag.name] = "true";
      continue;
    }
    const value = match[2] ?? argv[++i];
    if (value === undefined || (match[2] === undefined && value.startsWith("--"))) {
      throw new AgentError("usage", `--${flag.name} needs a value`, `for example --${flag.name} ${flag.value}`);
    }
    flags.values[flag.name] = value;
    if (flag.repeat) flags.lists[flag.name] = [...(flags.lists[flag.name] ?? []), value];
  }
  const file = flags.values.help || flags.values.version ? undefined : load(flags.values.config);
  const fromEnv: Settings = { values: {}, lists: {} };
  for (const flag of FLAGS) {
    const yields = flag.yieldsTo && (flags.values[flag.yieldsTo] ?? file?.values[flag.yieldsTo]) !== undefined;
    const value = flag.env && !yields ? env(flag.env) : undefined;
    if (value) fromEnv.values[flag.name] = value;
  }
  // The command line's own tunnel replaces the file's tables; its other per-tunnel settings
  // (host-header, access rules) apply to every table.
  const tables =
    file?.tunnels.length && !ORIGIN_KEYS.some((key) => key in flags.values) && !("name" in flags.values)
      ? file.tunnels
      : [undefined];
  const layered = (table: Settings | undefined): Settings => {
    const layers = [flags, table, file, fromEnv].filter((layer): layer is Settings => layer !== undefined);
    const merged: Settings = { values: {}, lists: {} };
    for (const layer of [...layers].reverse()) {
      Object.assign(merged.values, layer.values);
      Object.assign(merged.lists, layer.lists);
    }
    // One tunnel has one origin: the most specific layer that names one decides it.
    const decides = layers.find((layer) => ORIGIN_KEYS.some((key) => key in layer.values));
    for (const key of ORIGIN_KEYS) {
      if (decides && !(key in decides.values)) delete merged.values[key];
    }
    return merged;
  };
  const all = layered(undefined);
  return { ...all, tunnels: tables.map((table) => (table ? layered(table) : all)) };
}

/** The whole CLI. Returns the exit status; the runtime's entry exits with it. */
export async function main(runtime: Runtime, argv: string[]): Promise<number> {
  let log = new Log(false);
  const origins: OriginSetup[] = [];
  try {
    const diagnose = argv[0] === "doctor";
    const parsed = parseArgs(diagnose ? argv.slice(1) : argv, (name) => runtime.env(name));
    const { values: args, lists } = parsed;
    const debug = args.debug === "true";
    log = new Log(debug);
    if (args.help) {
      console.log(help());
      return 0;
    }
    if (args.version) {
      console.log(`agent ${VERSION} (${runtime.description})`);
      return 0;
    }
    const mode = (args.log ?? "auto") as LogMode;
    if (!["auto", "plain", "json"].includes(mode)) {
      throw new AgentError("usage", `--log ${mode} is not a log format`, "use auto (the default), plain or json");
    }
    if (diagnose) {
      const settings = await options(args, lists, runtime, log, false);
      return await doctor(settings.relay, settings.name, settings.net, (line) => console.log(line), settings.token);
    }
    log = new Log({ mode, debug, quiet: args.quiet === "true", terminal: runtime.terminal });
    const tunnels: { settings: Awaited<ReturnType<typeof options>>; setup: OriginSetup }[] = [];
    for (const tunnel of parsed.tunnels) {
      const setup = await setUpOrigin(tunnel.values, runtime);
      origins.push(setup);
      tunnels.push({ settings: await options(tunnel.values, tunnel.lists, runtime, log, true), setup });
    }
    const names = tunnels.map((t) => t.settings.name);
    const twice = names.find((name, i) => names.indexOf(name) !== i);
    if (twice) {
      throw new AgentError("usage", `two tunnels are named ${twice}`, "give each [[tunnel]] its own name");
    }
    const first = tunnels[0]!;
    log.update({ relay: first.settings.relay.origin });
    for (const { settings, setup } of tunnels) {
      log.info(settings.summary, "start", {
        name: settings.name,
        relay: settings.relay.origin,
        origin: setup.origin.label,
        version: VERSION,
      });
    }
    // One inspector, for the first tunnel: its port is the one people know (--inspect).
    const address = parseInspect(args.inspect);
    const keep = parseKeep(args["inspect-keep"] ?? "100");
    const inspector =
      address &&
      (await startInspector(
        address,
        new Recorder(first.settings.name, keep),
        first.setup.origin,
        VERSION,
        log,
        runtime.listenDenied,
      ));
    if (inspector) {
      log.info(
        tunnels.length > 1 ? `inspector: ${inspector.url} (tunnel ${first.settings.name})` : `inspector: ${inspector.url}`,
      );
      log.setInspector(inspector.url);
    }
    const several = tunnels.length > 1;
    const agents = tunnels.map(
      ({ settings, setup }, i) =>
        new Agent(
          { ...settings, observer: i === 0 ? inspector?.recorder : undefined },
          setup.origin,
          runtime,
          several ? log.forTunnel(settings.name) : log,
        ),
    );
    for (const { setup } of tunnels) void setup.check(log);
    let stoppingSince = 0;
    runtime.onStop(() => {
      if (!stoppingSince) {
        stoppingSince = performance.now();
        for (const agent of agents) agent.stop();
      } else if (performance.now() - stoppingSince > 1000) {
        // A second Ctrl-C does not wait. One within a second is the same keypress delivered
        // twice: `deno task` forwards the terminal's SIGINT to a child that received it too.
        log.close();
        runtime.exit(130);
      }
    });
    // A tunnel refused ends alone, with its error; the others go on.
    const ends = await Promise.all(
      agents.map((agent, i) =>
        agent.run().then(
          () => undefined,
          (error: unknown) => {
            if (!several || !(error instanceof AgentError)) throw error;
            log.error(`tunnel ${tunnels[i]!.settings.name}: ${error.message}`, error.hint);
            return error;
          },
        ),
      ),
    );
    log.update({ state: "stopped" });
    agents.forEach((agent, i) => {
      const { name, token } = tunnels[i]!.settings;
      if (!ends[i]) log.info(stoppedLine(name, agent.everUp, token !== ""), "stopped", { name });
    });
    inspector?.close();
    // Exit as a failure only when no tunnel was left running.
    return ends.every(Boolean) ? ends[0]!.exitStatus : 0;
  } catch (error) {
    const explained = runtime.explain?.(error);
    if (error instanceof AgentError) {
      log.error(error.message, error.hint);
      return error.exitStatus;
    }
    if (explained) {
      log.error(explained.message, explained.hint);
      return 4;
    }
    log.error(`unexpected failure: ${(error as Error)?.message ?? error}`, "run again with --debug for details, and report it");
    log.debug("stack", error);
    return 1;
  } finally {
    for (const setup of origins) setup.close();
    log.close();
  }
}

/** What Ctrl-C did, in one line. */
function stoppedLine(name: string, wasUp: boolean, token: boolean): string {
  if (!wasUp) return "stopped: the tunnel was never up";
  // A relay with tokens may keep a name for the token that took it; an open one frees it.
  return token ? `stopped: tunnel ${name} closed` : `stopped: tunnel ${name} closed, the name is free`;
}

async function options(
  args: Record<string, string>,
  lists: Record<string, string[]>,
  runtime: Runtime,
  log: Log,
  serving: boolean,
): Promise<AgentOptions & { summary: string }> {
  const name = args.name ?? randomName();
  if (!TUNNEL_NAME_PATTERN.test(name)) {
    throw new AgentError(
      "usage",
      `"${name}" is not a tunnel name`,
      "use 1 to 63 lowercase letters, digits and inner hyphens, like my-app",
    );
  }
  if (RESERVED_NAMES.has(name)) {
    throw new AgentError(
      "usage",
      `"${name}" is a reserved name`,
      "relays keep names such as www, api, admin and login for themselves, so that no tunnel can pose as the relay's own service: choose another --name",
    );
  }
  const { rules, summary } = await visitorRules(name, {
    basicAuth: lists["basic-auth"] ?? [],
    allowIp: lists["allow-ip"] ?? [],
    verifyWebhook: lists["verify-webhook"] ?? [],
  });
  const relayText = args.relay ?? "http://localhost:8787";
  let relay: URL;
  try {
    relay = new URL(relayText);
  } catch {
    throw new AgentError(
      "usage",
      `--relay ${JSON.stringify(relayText)} is not a URL`,
      "for example --relay https://tunnel.example.com",
    );
  }
  if (relay.protocol !== "http:" && relay.protocol !== "https:") {
    throw new AgentError(
      "usage",
      `--relay must be an http:// or https:// URL, not ${relay.protocol}`,
      "for example --relay https://tunnel.example.com",
    );
  }
  const heartbeat = Number(args.heartbeat ?? "20");
  if (!(heartbeat >= 0.05 && heartbeat <= 3600)) {
    throw new AgentError(
      "usage",
      `--heartbeat ${args.heartbeat} is out of range`,
      "use seconds between 0.05 and 3600; 20 suits most networks",
    );
  }
  const transport = (args.transport ?? "auto") as TransportChoice;
  if (!["auto", "websocket", "https"].includes(transport)) {
    throw new AgentError("usage", `--transport ${transport} is not a transport`, "use auto (the default), websocket or https");
  }
  const insecure = args.insecure === "true";
  if (insecure) {
    log.warn("--insecure: the relay's certificate is not verified; anyone on the way can read and change this tunnel's traffic");
  }
  const env = (name: string) => runtime.env(name);
  let proxy: NetConfig["proxy"];
  try {
    proxy = proxyFor(relay, args.proxy, env);
  } catch (error) {
    throw new AgentError("usage", (error as Error).message, "for example --proxy http://proxy.example.com:3128");
  }
  const ca = [args.ca, env("NODE_EXTRA_CA_CERTS")].flatMap((file) => (file ? [readPem(file, runtime)] : []));
  const net: NetConfig = { proxy, ca, insecure, timeoutMs: CONNECT_TIMEOUT_MS };
  const token = args["token-file"] !== undefined ? readToken(args["token-file"], args.token, runtime) : (args.token ?? "");
  // Random names are new each run, so only a chosen name has a claim worth keeping.
  const claim = serving && args.name !== undefined ? loadClaim(relay, name, env, log) : undefined;
  return { relay, name, token, claim, rules, summary, heartbeatMs: heartbeat * 1000, version: VERSION, net, transport };
}

/** The first line of --token-file, trimmed. */
function readToken(file: string, flag: string | undefined, runtime: Runtime): string {
  if (flag !== undefined) {
    throw new AgentError(
      "usage",
      "--token and --token-file are both given",
      "pass the token one way: --token-file keeps it out of `ps`",
    );
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (runtime.explain?.(error)) throw error;
    throw new AgentError(
      "usage",
      `cannot read the token file ${file}: ${(error as Error).message}`,
      "give the path of a file whose first line is the relay's token",
    );
  }
  const token = text.split(/\r?\n/, 1)[0]!.trim();
  if (!token) {
    throw new AgentError(
      "usage",
      `the token file ${file} is empty (its first line holds no token)`,
      "put the relay's token on the file's first line",
    );
  }
  return token;
}

const CONNECT_TIMEOUT_MS = 10_000;
