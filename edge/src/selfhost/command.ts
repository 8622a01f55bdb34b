import { parseArgs } from "node:util";
import type { SettingVars } from "../core/host.ts";
import { readSettings } from "../core/settings.ts";
import { TrustedProxies } from "./_address.ts";
import { RelayStartError } from "./_errors.ts";
import { DataDir } from "./_storage.ts";
import { readTls } from "./_tls.ts";
import { startRelay } from "./relay.ts";
import { ListenError, type ServeRelay } from "./server.ts";

export { RelayStartError } from "./_errors.ts";

/** The Worker's vars (wrangler.toml, docs/security.md), read from the environment by name. */
export const RELAY_VARS = [
  "BASE_DOMAIN",
  "BURROW_TOKENS",
  "BURROW_TOKEN",
  "RESPONSE_TIMEOUT_SECONDS",
  "MAX_STREAMS_PER_TUNNEL",
  "HELLO_TIMEOUT_SECONDS",
  "MAX_AGENT_FRAMES_PER_SECOND",
  "MAX_AGENT_BYTES_PER_SECOND",
  "MAX_SIGNED_BODY_BYTES",
  "NAME_TTL_DAYS",
  "MAX_WAITING_WS_BYTES",
  "MAX_STREAMS_PER_VISITOR",
  "MAX_SIGNED_BODIES",
  "SIGNED_BODY_SECONDS",
  "MIN_SIGNED_BODY_BYTES_PER_SECOND",
  "RESUME_SECONDS",
  "TUNNELS_PER_TOKEN",
  "CONNECTS_PER_MINUTE",
  "MAX_REQUEST_HEAD_BYTES",
  "ALLOW_PUNYCODE_NAMES",
] as const;

export const RELAY_HELP = `Usage: agent relay --port PORT [options]

Runs a Burrow relay in this process: agents connect to it and visitors reach their tunnels
through it, as through the Cloudflare relay. Settings are the Worker's variables, read from the
environment (BURROW_TOKENS, RESUME_SECONDS, NAME_TTL_DAYS, CONNECTS_PER_MINUTE... see
docs/security.md); the flags below override them.

Options:
  --port PORT              port to listen on (required; 0 picks a free one)
  --host ADDR              address to listen on (default 0.0.0.0, every IPv4 interface; :: for IPv6 too)
  --base-domain DOMAIN     serve tunnels at <name>.DOMAIN (needs wildcard DNS; "localhost" works
                           on one machine); without it, at /t/<name>/ (BASE_DOMAIN)
  --public-url URL         the URL visitors use, without a base domain (a proxy in front, say):
                           https://relay.example.com
  --data DIR               keep what must survive a restart here (names' owners, tokens' tunnels,
                           TCP tunnels' ports); without it, in memory only
  --tls-cert FILE          serve HTTPS with this PEM certificate chain (and --tls-key)
  --tls-key FILE           the certificate's PEM private key
  --trust-proxy ADDR[,..]  take the visitor's address from X-Forwarded-For when the connection
                           comes from one of these addresses or CIDR ranges (nginx, Caddy)
  --tcp-ports A-B          give each TCP tunnel (agent --tcp) a public port from this range,
                           the same one for its name while the name is kept: plain clients
                           (ssh -p PORT relay-host) reach it with no connect and NO KEY, from
                           any address its --allow-ip admits. Open the range in your firewall
  --tcp-host ADDR          address the public TCP ports listen on (default: --host's)
  -h, --help               this help

SIGTERM or Ctrl-C stops the relay: agents are told to reconnect (close 1012) and do so when it
is back; with --data their names are still theirs.`;

export interface RelayIo {
  env(name: string): string | undefined;
  /** Calls `handler` on SIGINT, SIGTERM and SIGHUP. */
  onStop(handler: () => void): void;
  print(line: string): void;
  /** The runtime's server adapter. */
  serve: ServeRelay;
}

/**
 * `agent relay`: starts the relay, prints its ready line, and resolves with the exit status once
 * a signal has stopped it.
 * @throws {RelayStartError} for a bad flag or variable, an unreadable certificate, a data
 *   directory it cannot write, a port in use.
 */
export async function relayCommand(argv: string[], io: RelayIo): Promise<number> {
  const flags = parseFlags(argv);
  if (flags.help) {
    io.print(RELAY_HELP);
    return 0;
  }
  const port = portOf(flags.port);
  const host = flags.host ?? "0.0.0.0";
  const vars: Record<string, string | undefined> = {};
  for (const name of RELAY_VARS) vars[name] = io.env(name);
  if (flags["base-domain"] !== undefined) vars.BASE_DOMAIN = flags["base-domain"];
  const { settings, problems } = readSettings(vars as SettingVars);
  if (problems.length > 0) {
    throw new RelayStartError(
      `the relay does not start with a bad setting: ${problems.map((p) => p.replace(/; using the default.*$/, "")).join("; ")}`,
      "fix the variable in the relay's environment, or unset it for its default (docs/security.md lists each)",
    );
  }
  if ((flags["tls-cert"] === undefined) !== (flags["tls-key"] === undefined)) {
    throw new RelayStartError(
      "--tls-cert and --tls-key go together",
      "give both: --tls-cert fullchain.pem --tls-key privkey.pem",
    );
  }
  const tls = flags["tls-cert"] ? readTls(flags["tls-cert"], flags["tls-key"]!) : undefined;
  let trusted: TrustedProxies;
  try {
    trusted = TrustedProxies.parse(flags["trust-proxy"] ?? []);
  } catch (error) {
    throw new RelayStartError(`--trust-proxy: ${(error as Error).message}`, "for example --trust-proxy 127.0.0.1,10.0.0.0/8");
  }
  const publicUrl = flags["public-url"] === undefined ? undefined : publicUrlOf(flags["public-url"]);
  if (flags["tcp-host"] !== undefined && flags["tcp-ports"] === undefined) {
    throw new RelayStartError("--tcp-host goes with --tcp-ports", "add the range, for example --tcp-ports 20000-20099");
  }
  const tcpPorts =
    flags["tcp-ports"] === undefined ? undefined : { ...portRangeOf(flags["tcp-ports"]), host: flags["tcp-host"] ?? host };
  const data = flags.data === undefined ? undefined : prepareData(flags.data);
  const localHost = ["0.0.0.0", "::", "127.0.0.1", "::1"].includes(host) ? "localhost" : bracketed(host);
  let relay: Awaited<ReturnType<typeof startRelay>>;
  try {
    relay = await startRelay(
      {
        host,
        port,
        tls,
        settings,
        data,
        trusted,
        publicUrl,
        localHost,
        maxHeadBytes: settings.maxRequestHeadBytes,
        tcpPorts,
      },
      io.serve,
    );
  } catch (error) {
    if (error instanceof ListenError) throw listenProblem(error, host, port);
    throw error;
  }
  const scheme = tls ? "https" : "http";
  const where = settings.baseDomain
    ? `${scheme}://<name>.${settings.baseDomain}:${relay.port}/`
    : `${publicUrl ? publicUrl.origin : `${scheme}://${localHost}:${relay.port}`}/t/<name>/`;
  const kept = data ? `data in ${data.path}` : "data in memory only";
  io.print(`relay | listening on ${scheme}://${bracketed(host)}:${relay.port} (tunnels at ${where}, ${kept})`);
  if (settings.open)
    io.print("relay | open: anyone who can reach this relay may open tunnels (set BURROW_TOKENS to require tokens)");
  if (tcpPorts) {
    io.print(
      `relay | public TCP ports ${relay.tcpPorts} on ${bracketed(tcpPorts.host)}: each TCP tunnel that asks (--public-port) gets one, reachable with no key by anyone its --allow-ip admits`,
    );
  }
  if (!settings.baseDomain && !publicUrl && !["127.0.0.1", "::1", "localhost"].includes(host)) {
    io.print("relay | visitors from other machines: pass --public-url with the URL they use, or --base-domain");
  }
  return new Promise((resolve) => {
    let stopping = false;
    io.onStop(() => {
      if (stopping) return;
      stopping = true;
      io.print("relay | stopping: agents are told to reconnect");
      relay.stop().then(
        () => resolve(0),
        (error: unknown) => {
          console.error("relay | the stop failed", error);
          resolve(1);
        },
      );
    });
  });
}

function parseFlags(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        host: { type: "string" },
        "base-domain": { type: "string" },
        "public-url": { type: "string" },
        data: { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "trust-proxy": { type: "string", multiple: true },
        "tcp-ports": { type: "string" },
        "tcp-host": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    throw new RelayStartError((error as Error).message.split("\n")[0]!, "see agent relay --help");
  }
}

function portOf(text: string | undefined): number {
  if (text === undefined) throw new RelayStartError("agent relay needs --port", "for example: agent relay --port 8080");
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    throw new RelayStartError(`--port ${text} is not a port number`, "use a number from 1 to 65535, for example --port 8080");
  }
  return port;
}

/** "20000-20099", or one port "20000". */
function portRangeOf(text: string): { first: number; last: number } {
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2] ?? match?.[1]);
  if (!match || first < 1 || last > 65535) {
    throw new RelayStartError(
      `--tcp-ports ${text} is not a range of ports`,
      "give the first and last port, from 1 to 65535: for example --tcp-ports 20000-20099",
    );
  }
  if (first > last) {
    throw new RelayStartError(`--tcp-ports ${text} runs backwards`, `give the lower port first: --tcp-ports ${last}-${first}`);
  }
  return { first, last };
}

function publicUrlOf(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RelayStartError(
      `--public-url ${JSON.stringify(text)} is not a URL`,
      "for example --public-url https://relay.example.com",
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RelayStartError(
      `--public-url must be http:// or https://, not ${url.protocol}`,
      "for example --public-url https://relay.example.com",
    );
  }
  return url;
}

function prepareData(path: string): DataDir {
  const data = new DataDir(path);
  try {
    data.prepare();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === "ENOTDIR" || code === "EEXIST" ? "it is not a directory" : (error as Error).message;
    throw new RelayStartError(
      `cannot write to the data directory ${path} (--data): ${why}`,
      "give a directory this user may write (the relay makes it if its parent is writable), e.g. --data ./relay-data",
    );
  }
  return data;
}

function listenProblem(error: ListenError, host: string, port: number): RelayStartError {
  const address = `${bracketed(host)}:${port}`;
  if (error.reason === "in-use") {
    return new RelayStartError(
      `cannot listen on ${address}: the port is already in use (another relay, or another server)`,
      `stop that server, or pick another port: agent relay --port ${port === 8080 ? 8081 : 8080}`,
    );
  }
  if (error.reason === "denied") {
    return new RelayStartError(
      `cannot listen on ${address}: ${error.message}`,
      port < 1024
        ? "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port such as 8080, behind a proxy on 443"
        : "on Deno, run it with deno task relay, or add --allow-net to your deno run command",
    );
  }
  return new RelayStartError(error.message, "check --host: it must be an address of this machine");
}

function bracketed(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}
