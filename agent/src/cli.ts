import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { MAX_RULES, RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import pkg from "../package.json" with { type: "json" };
import { Agent, type AgentOptions, type TransportChoice } from "./agent.ts";
import { CLAIM_ENV_VARS, loadClaim } from "./claims.ts";
import { doctor } from "./doctor.ts";
import { AgentError } from "./errors.ts";
import { Recorder } from "./inspector/recorder.ts";
import { DEFAULT_INSPECT, parseInspect, parseKeep, startInspector } from "./inspector/server.ts";
import { Log, type LogMode } from "./log.ts";
import { randomName } from "./names.ts";
import type { NetConfig } from "./net/dial.ts";
import { PROXY_ENV_VARS, proxyFor } from "./net/proxy.ts";
import { Origin, UNREACHABLE } from "./origin.ts";
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
}

/** Every flag, once: parsing, environment fallbacks and --help all come from this table. */
const FLAGS: Flag[] = [
  { name: "port", env: "BURROW_PORT", value: "PORT", help: "port of the local server to expose (required)" },
  { name: "host", env: "BURROW_HOST", value: "HOST", default: "localhost", help: "host of the local server" },
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
  { name: "version", short: "v", help: "print the version and exit" },
  { name: "help", short: "h", help: "print this help and exit" },
];

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
    "       agent doctor [--relay URL] [--proxy URL] [--ca FILE]    checks the way to the relay",
    "",
    "Options:",
    ...rows,
    "",
  ].join("\n");
}

/** Parsed flags: the last value of each flag, and every value of the repeatable ones. */
export interface Args {
  values: Record<string, string>;
  lists: Record<string, string[]>;
}

/**
 * Reads flags, then environment variables, then defaults.
 * @throws {AgentError} "usage" for an unknown flag or a bad value.
 */
export function parseArgs(argv: string[], env: (name: string) => string | undefined): Args {
  const values: Record<string, string> = {};
  const lists: Record<string, string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const short = /^-([a-z])$/.exec(arg)?.[1];
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(short ? `--${FLAGS.find((f) => f.short === short)?.name}` : arg);
    const flag = match && FLAGS.find((f) => f.name === match[1]);
    if (!flag) {
      throw new AgentError("usage", `unknown argument ${JSON.stringify(arg)}`, "run `agent --help` for the flags");
    }
    if (!flag.value) {
      values[flag.name] = "true";
      continue;
    }
    const value = match[2] ?? argv[++i];
    if (value === undefined || (match[2] === undefined && value.startsWith("--"))) {
      throw new AgentError("usage", `--${flag.name} needs a value`, `for example --${flag.name} ${flag.value}`);
    }
    values[flag.name] = value;
    if (flag.repeat) lists[flag.name] = [...(lists[flag.name] ?? []), value];
  }
  for (const flag of FLAGS) {
    if (values[flag.name] === undefined && flag.env && !(flag.yieldsTo && values[flag.yieldsTo] !== undefined)) {
      const fromEnv = env(flag.env);
      if (fromEnv) values[flag.name] = fromEnv;
    }
  }
  return { values, lists };
}

/** The whole CLI. Returns the exit status; the runtime's entry exits with it. */
export async function main(runtime: Runtime, argv: string[]): Promise<number> {
  let log = new Log(false);
  try {
    const diagnose = argv[0] === "doctor";
    const { values: args, lists } = parseArgs(diagnose ? argv.slice(1) : argv, (name) => runtime.env(name));
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
    const host = args.host ?? "localhost";
    const originPort = port(args.port);
    const origin = new Origin(host, originPort);
    log = new Log({ mode, debug, quiet: args.quiet === "true", terminal: runtime.terminal });
    const settings = await options(args, lists, runtime, log, true);
    log.update({ relay: settings.relay.origin });
    log.info(settings.summary, "start", {
      name: settings.name,
      relay: settings.relay.origin,
      origin: origin.url,
      version: VERSION,
    });
    const address = parseInspect(args.inspect);
    const keep = parseKeep(args["inspect-keep"] ?? "100");
    const inspector =
      address && (await startInspector(address, new Recorder(settings.name, keep), origin, VERSION, log, runtime.listenDenied));
    if (inspector) {
      log.info(`inspector: ${inspector.url}`);
      log.setInspector(inspector.url);
    }
    const agent = new Agent({ ...settings, observer: inspector?.recorder }, origin, runtime, log);
    void checkOrigin(host, originPort, origin.url, log);
    let stoppingSince = 0;
    runtime.onStop(() => {
      if (!stoppingSince) {
        stoppingSince = performance.now();
        agent.stop();
      } else if (performance.now() - stoppingSince > 1000) {
        // A second Ctrl-C does not wait. One within a second is the same keypress delivered
        // twice: `deno task` forwards the terminal's SIGINT to a child that received it too.
        log.close();
        runtime.exit(130);
      }
    });
    await agent.run();
    log.update({ state: "stopped" });
    log.info(stoppedLine(settings.name, agent.everUp, settings.token !== ""), "stopped", { name: settings.name });
    inspector?.close();
    return 0;
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
    log.close();
  }
}

/** What Ctrl-C did, in one line. */
function stoppedLine(name: string, wasUp: boolean, token: boolean): string {
  if (!wasUp) return "stopped: the tunnel was never up";
  // A relay with tokens may keep a name for the token that took it; an open one frees it.
  return token ? `stopped: tunnel ${name} closed` : `stopped: tunnel ${name} closed, the name is free`;
}

/** How long the start-up look at the origin may take; past it, the agent says nothing. */
const ORIGIN_CHECK_MS = 2_000;

/** Says at once when nothing listens on the origin's port; the tunnel opens all the same. */
async function checkOrigin(host: string, port: number, url: string, log: Log): Promise<void> {
  const code = await new Promise<string | undefined>((resolve) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => done(undefined), ORIGIN_CHECK_MS);
    const done = (result: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    socket.once("connect", () => done(undefined));
    socket.once("error", (error: NodeJS.ErrnoException) => done(error.code ?? "error"));
  });
  if (code && UNREACHABLE.has(code)) {
    const where = url.replace(/^http:\/\//, "");
    log.warn(`nothing is listening on ${where} yet; visitors get 502 origin-unreachable until it does`, "origin-down", {
      origin: url,
      code,
    });
  }
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
  const ca = [args.ca, env("NODE_EXTRA_CA_CERTS")].flatMap((file) => (file ? [readCa(file, runtime)] : []));
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

/** Reads a PEM file of CA certificates, for --ca and NODE_EXTRA_CA_CERTS. */
function readCa(file: string, runtime: Runtime): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (runtime.explain?.(error)) throw error;
    throw new AgentError("usage", `cannot read the CA file ${file}: ${(error as Error).message}`, "give the path of a PEM file");
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new AgentError(
      "usage",
      `${file} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`,
      "export the CA as PEM (Base-64 encoded X.509); a DER file converts with: openssl x509 -inform der -in ca.cer -out ca.pem",
    );
  }
  return text;
}

function port(text: string | undefined): number {
  if (text === undefined) {
    throw new AgentError(
      "usage",
      "which local port should the tunnel expose?",
      "pass it with --port, for example: agent --port 8000",
    );
  }
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new AgentError("usage", `--port ${text} is not a port number`, "use a number from 1 to 65535, for example --port 8000");
  }
  return value;
}
