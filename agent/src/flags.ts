// The flag table, --help and the layering of flags, config file and environment.
import { MAX_CONNECTIONS, MAX_RULES } from "@burrow/protocol";
import { CLAIM_ENV_VARS } from "./claims.ts";
import { type ConfigFile, type KeySpec, loadConfig, type Settings } from "./config.ts";
import { AgentError } from "./errors.ts";
import { DEFAULT_INSPECT } from "./inspector/server.ts";
import { PROXY_ENV_VARS } from "./net/proxy.ts";
import { readShapes } from "./shapes.ts";
import { closest } from "./suggest.ts";
import { loadUserConfig, type UserConfig } from "./user-config.ts";

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
  /** Never on the command line (other users see it in `ps`): the config file or the variable. */
  noArgv?: true;
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
  {
    name: "dir",
    value: "DIR",
    help: "serve the files of this directory instead of a local server (index.html for a directory, else its listing; names starting with a dot are 404)",
  },
  {
    name: "dir-dotfiles",
    help: "with --dir, also serve names that start with a dot (.env, .git/, .well-known/): everyone with the URL can read them",
  },
  {
    name: "host-header",
    value: "MODE",
    default: "rewrite",
    help: "the Host the local server sees: rewrite (its own host:port), preserve (the public host), or this VALUE",
  },
  {
    name: "tcp",
    value: "PORT|HOST:PORT",
    help: "a TCP tunnel to this port (ssh, a database) instead of a web server; visitors use `agent connect NAME`; only that host and port are reached",
  },
  {
    name: "connect-key-file",
    value: "FILE",
    help: "with --tcp: the keys (one per line) that let visitors `agent connect`; without it the agent makes one, keeps it and prints the command to hand out",
  },
  {
    name: "public-port",
    help: "with --tcp, on a relay that gives them (agent relay --tcp-ports): a public port plain clients reach with no key (ssh -p PORT relay-host); only --allow-ip guards it",
  },
  { name: "origin-ca", value: "FILE", help: "trust the CA certificates in this PEM file for an https:// --origin" },
  { name: "origin-insecure", help: "do not verify an https:// --origin's certificate (a local dev server's self-signed one)" },
  {
    name: "relay",
    env: "BURROW_RELAY",
    value: "URL",
    default: "`agent login`'s, else http://localhost:8787",
    help: "the Burrow relay to connect to",
  },
  { name: "name", env: "BURROW_NAME", value: "NAME", default: "a random name", help: "tunnel name: the subdomain visitors use" },
  {
    name: "token",
    env: "BURROW_TOKEN",
    value: "TOKEN",
    default: "`agent login`'s for its relay, else none",
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
    name: "connections",
    value: "N",
    default: "1",
    help: `connections to the relay for this tunnel, 1 to ${MAX_CONNECTIONS}, each to its own Durable Object: for more requests a second than one object serves (about 1,000)`,
  },
  {
    name: "proxy",
    value: "URL",
    default: "$HTTPS_PROXY unless $NO_PROXY",
    help: "HTTP proxy: http://host:port, none, or auto (WPAD: the PAC file at http://wpad/wpad.dat, else direct); credentials in it (http://DOMAIN%5Cuser:password@host:port) show in `ps`: prefer $BURROW_PROXY_USER and $BURROW_PROXY_PASSWORD",
  },
  {
    name: "proxy-auth",
    env: "BURROW_PROXY_AUTH",
    value: "SCHEME",
    default: "the strongest the proxy offers",
    help: "the proxy authentication scheme: negotiate, ntlm, digest or basic",
  },
  {
    name: "proxy-user",
    env: "BURROW_PROXY_USER",
    value: "USER",
    help: "the proxy's user when its URL has none: alice, DOMAIN\\alice or alice@DOMAIN",
  },
  {
    name: "proxy-password",
    env: "BURROW_PROXY_PASSWORD",
    value: "PASSWORD",
    help: "that user's password: in the variable or burrow.toml only, never a flag (other users see flags in `ps`)",
    noArgv: true,
  },
  {
    name: "proxy-pac",
    env: "BURROW_PROXY_PAC",
    value: "URL|FILE",
    help: "a PAC file (http://, https://, file: or a path) whose FindProxyForURL chooses the proxy; it runs in a sandbox",
  },
  {
    name: "proxy-credentials-for",
    value: "HOSTS",
    help: "with --proxy auto: the proxy hosts (comma-separated) that WPAD's PAC may name and that get your proxy credentials (default: none)",
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
  { name: "quiet", help: "print only the public URL, warnings and errors" },
  {
    name: "inspect",
    value: "[HOST:]PORT",
    default: DEFAULT_INSPECT,
    help: "serve the inspector (recent requests, replay) there, or on the next free port; false: none; a HOST other than loopback lets other machines in",
  },
  { name: "inspect-keep", value: "N", default: "100", help: "requests the inspector keeps, each body up to 64 KiB each way" },
  {
    name: "listen",
    value: "HOST:PORT",
    help: "agent connect: accept local connections here, each one a connection to the tunnel's service (127.0.0.1:2222)",
    noFile: true,
  },
  {
    name: "stdio",
    help: "agent connect: one connection on stdin and stdout (ssh -o ProxyCommand='agent connect NAME --stdio')",
    noFile: true,
  },
  {
    name: "key-file",
    value: "FILE",
    help: "agent connect (and agent doctor connect): read the tunnel's connect key from the first line of this file",
  },
  { name: "key", env: "BURROW_CONNECT_KEY", value: "KEY", help: "agent connect: the tunnel's connect key", yieldsTo: "key-file" },
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

export function help(): string {
  const rows = FLAGS.map((flag) => {
    const left = `  ${flag.short ? `-${flag.short}, ` : ""}${flag.noArgv ? "" : "--"}${flag.name}${flag.value ? ` ${flag.value}` : ""}`;
    const extra = [flag.repeat && "repeatable", flag.env && `env ${flag.env}`, flag.default && `default: ${flag.default}`]
      .filter(Boolean)
      .join("; ");
    return `${left.padEnd(32)}${flag.help}${extra ? ` (${extra})` : ""}`;
  });
  return [
    "Burrow agent: expose a local server through a Burrow relay.",
    "",
    "Usage: agent --port 8000 [--name NAME] [--relay URL]    (also: agent 8000, agent http 8000)",
    "       agent --origin https://localhost:8443 --origin-insecure | --dir ./public",
    "       agent [--config FILE]    the tunnels of burrow.toml's [[tunnel]] tables",
    "       agent --tcp 22 [--connect-key-file FILE]    a TCP tunnel (ssh, a database)",
    "       agent connect NAME --listen 127.0.0.1:2222 | --stdio [--key-file FILE]    reach a TCP tunnel",
    "       agent doctor [--relay URL] [--proxy URL] [--ca FILE]    checks the way to the relay",
    "       agent doctor connect NAME --key-file FILE    checks it for agent connect: is NAME a TCP tunnel taking the key",
    "       agent login --relay URL    checks the relay, reads its token from a prompt or stdin, saves both",
    "       agent logout               forgets what login saved",
    "",
    "The package's bin is also named burrow-agent: npx burrow-agent --port 8000",
    "",
    "Options:",
    ...rows,
    "",
    "Settings come from the flags, else the config file (the same keys without the dashes, and",
    "[[tunnel]] tables of name, port, host, origin, dir, dir-dotfiles, host-header, origin-ca,",
    "origin-insecure, tcp, connect-key-file, public-port, the access rules and connections), else the",
    "environment variables, else",
    "what `agent login` saved ($XDG_CONFIG_HOME/burrow/config.toml: relay, and a token sent to",
    "that relay only), else the defaults.",
    "",
  ].join("\n");
}

/** Parsed settings: the last value of each flag, every value of the repeatable ones, and the tunnels. */
export interface Args extends Settings {
  /** One per tunnel to open, each with every setting that applies to it. */
  tunnels: Settings[];
  /** Warnings about the user config (a file others can read), for the CLI to print. */
  notes: string[];
}

/** Keys that say where one tunnel's traffic goes: a layer that has one of them decides. */
const ORIGIN_KEYS = ["port", "origin", "dir", "tcp"];

/**
 * Reads flags, then the config file (--config, or burrow.toml here), then environment
 * variables, then defaults.
 * @throws {AgentError} "usage" for an unknown flag, a bad value or a bad config file.
 */
export function parseArgs(
  argv: string[],
  env: (name: string) => string | undefined,
  load: (path: string | undefined) => ConfigFile | undefined = (path) => loadConfig(path, FILE_KEYS),
  loadUser: () => UserConfig | undefined = () => loadUserConfig(env),
): Args {
  const flags: Settings = { values: {}, lists: {} };
  // Words (not flags, not a flag's value) are the shapes of other tunnels' commands: `agent 8000`.
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-")) {
      words.push(arg);
      continue;
    }
    const short = /^-([a-z])$/.exec(arg)?.[1];
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(short ? `--${FLAGS.find((f) => f.short === short)?.name}` : arg);
    const flag = match && FLAGS.find((f) => f.name === match[1]);
    if (!flag) {
      const typed = /^--?([A-Za-z-]+)/.exec(arg)?.[1];
      const near = typed
        ? closest(
            typed.toLowerCase(),
            FLAGS.map((f) => f.name),
          )
        : undefined;
      throw new AgentError(
        "usage",
        `unknown argument ${JSON.stringify(arg)}${near ? `; did you mean --${near}?` : ""}`,
        "run `agent --help` for the flags",
      );
    }
    if (flag.noArgv) {
      throw new AgentError(
        "usage",
        `--${flag.name} is not a flag: other users would see it in \`ps\``,
        `set ${flag.env} in the environment, or ${flag.name} in burrow.toml`,
      );
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
  const [shapeFlag, shapeValue] = readShapes(words);
  if (shapeFlag && shapeValue !== undefined) {
    const twice = ORIGIN_KEYS.find((key) => key in flags.values);
    if (twice) {
      throw new AgentError(
        "usage",
        `\`${words.join(" ")}\` and --${twice} both name the local server`,
        `give it once: agent ${shapeFlag} ${shapeValue}`,
      );
    }
    flags.values[shapeFlag.slice(2)] = shapeValue;
  }
  const file = flags.values.help || flags.values.version ? undefined : load(flags.values.config);
  const fromEnv: Settings = { values: {}, lists: {}, from: {} };
  for (const flag of FLAGS) {
    const yields = flag.yieldsTo && (flags.values[flag.yieldsTo] ?? file?.values[flag.yieldsTo]) !== undefined;
    const value = flag.env && !yields ? env(flag.env) : undefined;
    if (value) {
      fromEnv.values[flag.name] = value;
      fromEnv.from![flag.name] = flag.env!;
    }
  }
  // The user's saved settings (`agent login`) sit under the environment: a variable is set for
  // one shell, one CI job or one service, so it is the more specific choice, as npm's
  // npm_config_* variables beat ~/.npmrc and NGROK_AUTHTOKEN beats ngrok.yml. Its token goes
  // only to the relay it was saved for: never sent to a --relay given elsewhere.
  const saved = flags.values.help || flags.values.version ? undefined : loadUser();
  const user: Settings = { values: {}, lists: {}, from: {} };
  if (saved) {
    const relay = flags.values.relay ?? file?.values.relay ?? fromEnv.values.relay ?? saved.relay;
    user.values.relay = saved.relay;
    user.from!.relay = saved.from.relay!;
    const tokenGiven = ["token", "token-file"].some(
      (key) => (flags.values[key] ?? file?.values[key] ?? fromEnv.values[key]) !== undefined,
    );
    if (saved.token && !tokenGiven && sameRelay(relay, saved.relay)) {
      user.values.token = saved.token;
      user.from!.token = saved.from.token!;
    }
  }
  // The command line's own tunnel replaces the file's tables; its other per-tunnel settings
  // (host-header, access rules) apply to every table.
  const tables =
    file?.tunnels.length && !ORIGIN_KEYS.some((key) => key in flags.values) && !("name" in flags.values)
      ? file.tunnels
      : [undefined];
  const layered = (table: Settings | undefined): Settings => {
    const layers = [flags, table, file, fromEnv, user].filter((layer): layer is Settings => layer !== undefined);
    const merged: Settings = { values: {}, lists: {}, from: {} };
    for (const layer of [...layers].reverse()) {
      Object.assign(merged.values, layer.values);
      Object.assign(merged.lists, layer.lists);
      // A flag's value has no `from`: it replaces whatever a lower layer said about the key.
      for (const key of Object.keys(layer.values)) {
        if (layer.from?.[key]) merged.from![key] = layer.from[key];
        else delete merged.from![key];
      }
    }
    // One tunnel has one origin: the most specific layer that names one decides it.
    const decides = layers.find((layer) => ORIGIN_KEYS.some((key) => key in layer.values));
    for (const key of ORIGIN_KEYS) {
      if (decides && !(key in decides.values)) delete merged.values[key];
    }
    return merged;
  };
  const all = layered(undefined);
  return {
    ...all,
    tunnels: tables.map((table) => (table ? layered(table) : all)),
    notes: saved?.notes ?? [],
  };
}

/** Two relay URLs name the same relay (scheme, host and port). */
function sameRelay(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}
