import { MAX_CONNECTIONS, RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import pkg from "../package.json" with { type: "json" };
import { Agent, type AgentOptions, type TransportChoice } from "./agent.ts";
import { loadClaim } from "./claims.ts";
import { doctor } from "./doctor.ts";
import { AgentError } from "./errors.ts";
import { help, parseArgs } from "./flags.ts";
import { Recorder } from "./inspector/recorder.ts";
import { parseInspect, parseKeep, startInspector } from "./inspector/server.ts";
import { located } from "./located.ts";
import { Log, type LogMode } from "./log.ts";
import { login, logout } from "./login.ts";
import { randomClaim, randomName } from "./names.ts";
import type { NetConfig } from "./net/dial.ts";
import { pacSettings } from "./net/pac/settings.ts";
import { proxyFor } from "./net/proxy.ts";
import { credentialsFromSettings } from "./net/proxy-auth/credentials.ts";
import { SCHEME_NAMES } from "./net/proxy-auth/select.ts";
import { type OriginSetup, readPem, readUserFile, setUpOrigin } from "./origin-setup.ts";
import { relay } from "./relay-command.ts";
import { withScheme } from "./relay-info.ts";
import { visitorRules } from "./rules.ts";
import type { Runtime } from "./runtime.ts";
import { connect, connectKey, connectRequest } from "./tcp/command.ts";
import { announceKeys, type ConnectKeys, connectKeys, parseTcpTarget } from "./tcp/setup.ts";

export { ENV_VARS } from "./flags.ts";

export const VERSION: string = pkg.version;

/** The whole CLI. Returns the exit status; the runtime's entry exits with it. */
export async function main(runtime: Runtime, argv: string[]): Promise<number> {
  let log = new Log(false);
  const origins: OriginSetup[] = [];
  // The settings being checked: an error about one names the file and line, or the variable.
  let from: Record<string, string> | undefined;
  try {
    // The relay reads none of the agent's flags, files or variables.
    if (argv[0] === "relay") return await relay(runtime, argv.slice(1));
    const command = ["doctor", "login", "logout", "connect"].includes(argv[0] ?? "") ? argv[0] : undefined;
    // `agent doctor connect NAME`: the checks of a visitor's `agent connect NAME`.
    const doctorConnect = command === "doctor" && argv[1] === "connect";
    const env = (name: string) => runtime.env(name);
    // login and logout do not read the saved settings they replace (a broken file included).
    const parsed = command
      ? parseArgs(
          argv.slice(command === "connect" ? 2 : doctorConnect ? 3 : 1),
          env,
          undefined,
          command === "doctor" || command === "connect" ? undefined : () => undefined,
        )
      : parseArgs(argv, env);
    const diagnose = command === "doctor";
    const { values: args, lists } = parsed;
    from = parsed.from;
    const debug = args.debug === "true";
    log = new Log(debug);
    for (const note of parsed.notes) log.warn(note);
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
    if (command === "logout") return logout(env, (line) => console.log(line));
    if (command === "connect" || doctorConnect) {
      const typed = doctorConnect ? "agent doctor connect" : "agent connect";
      const name = argv[doctorConnect ? 2 : 1];
      if (name === undefined || name.startsWith("-")) {
        throw new AgentError(
          "usage",
          `${typed} needs the tunnel's name`,
          doctorConnect
            ? "for example: agent doctor connect devbox --key-file devbox.key"
            : "for example: agent connect devbox --listen 127.0.0.1:2222",
        );
      }
      if (doctorConnect) {
        const key = connectKey(name, args, runtime, typed);
        const settings = await options({ ...args, name }, lists, runtime, log, false, argv);
        const print = (line: string) => console.log(line);
        return await doctor(settings.relay, name, settings.net, print, {
          token: "",
          version: VERSION,
          connect: { key },
        });
      }
      const request = connectRequest(name, args, runtime);
      // --stdio: stdout is the connection; every line goes to stderr, and only warnings and errors unless --debug.
      log = new Log({
        mode,
        debug,
        quiet: args.quiet === "true" || (request.listen === undefined && !debug),
        stderrOnly: request.listen === undefined,
      });
      const settings = await options({ ...args, name }, lists, runtime, log, false, argv);
      from = undefined;
      return await connect(settings, request, runtime, log);
    }
    if (command === "login") {
      if (args.relay === undefined || parsed.from?.relay) {
        throw new AgentError(
          "usage",
          "agent login needs --relay",
          "for example: agent login --relay https://burrow.example.workers.dev",
        );
      }
      const flag = ["token", "token-file"].find((key) => args[key] !== undefined && !parsed.from?.[key]);
      if (flag) {
        throw new AgentError(
          "usage",
          `agent login reads the token from a prompt or stdin, not --${flag}`,
          "type it at the prompt, or pipe it in: agent login --relay URL < token.txt",
        );
      }
      const settings = await options(args, lists, runtime, log, false, argv);
      return await login(settings.relay, settings.net, env, (line) => console.log(line));
    }
    if (diagnose) {
      const settings = await options(args, lists, runtime, log, false, argv);
      // Given a local server (--port, --origin, --dir) or a TCP target (--tcp), doctor checks it answers too.
      const local = ["port", "origin", "dir", "tcp"].some((key) => args[key] !== undefined);
      const setup = local ? await setUpOrigin(args, runtime) : undefined;
      if (setup) origins.push(setup);
      const print = (line: string) => console.log(line);
      const { relay, name, net, token } = settings;
      // --tcp: the relay must carry TCP tunnels, and the target accept connections.
      const tcp = args.tcp !== undefined ? parseTcpTarget(args.tcp) : undefined;
      return await doctor(relay, name, net, print, { token, version: VERSION, origin: setup?.origin, tcp });
    }
    log = new Log({ mode, debug, quiet: args.quiet === "true", terminal: runtime.terminal });
    const tunnels: { settings: Awaited<ReturnType<typeof options>>; setup: OriginSetup }[] = [];
    for (const tunnel of parsed.tunnels) {
      from = tunnel.from;
      const setup = await setUpOrigin(tunnel.values, runtime);
      origins.push(setup);
      tunnels.push({ settings: await options(tunnel.values, tunnel.lists, runtime, log, true, argv), setup });
    }
    from = parsed.from;
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
        origin: setup.label,
        version: VERSION,
      });
    }
    // One inspector for every tunnel of this agent.
    // The inspector shows HTTP exchanges: an agent of TCP tunnels only has none to show.
    const address = tunnels.some(({ setup }) => setup.origin) ? parseInspect(args.inspect) : undefined;
    const keep = parseKeep(args["inspect-keep"] ?? "100");
    // From here on, errors are about the network and the relay, not a setting's value.
    from = undefined;
    const inspector =
      address &&
      (await startInspector(
        address,
        new Recorder(first.settings.name, keep),
        new Map(tunnels.flatMap(({ settings, setup }) => (setup.origin ? [[settings.name, setup.origin] as const] : []))),
        VERSION,
        log,
        runtime.listenDenied,
      ));
    if (inspector) {
      log.info(`inspector: ${inspector.url}`);
      log.setInspector(inspector.url);
    }
    const several = tunnels.length > 1;
    const agents = tunnels.map(
      ({ settings, setup }) =>
        new Agent(
          { ...settings, observer: inspector?.recorder.for(settings.name) },
          setup.served,
          runtime,
          settings.connections > 1
            ? (several ? log.forTunnel(settings.name) : log).forConnection(0)
            : several
              ? log.forTunnel(settings.name)
              : log,
        ),
    );
    // A tunnel's further connections (--connections): each to its own shard of the tunnel,
    // started once the first is up (the relay admits them against the first's owner).
    const ended = agents.map(() => {
      let resolve = () => {};
      const promise = new Promise<void>((done) => {
        resolve = done;
      });
      return { promise, resolve };
    });
    const shards = agents.map((agent, i) => {
      const { settings, setup } = tunnels[i]!;
      const tunnelLog = several ? log.forTunnel(settings.name) : log;
      return Array.from({ length: settings.connections - 1 }, (_, k) => {
        const shard = new Agent(
          { ...settings, observer: inspector?.recorder.for(settings.name), shard: k + 1 },
          setup.served,
          runtime,
          tunnelLog.forConnection(k + 1),
        );
        // A stopped agent's run() returns at once: one whose first connection ended first never dials.
        const done = Promise.race([agent.up, ended[i]!.promise]).then(() =>
          shard.run().catch((error: unknown) => {
            const { message, hint } = error as AgentError;
            log.error(`tunnel ${settings.name}: connection ${k + 2} of ${settings.connections} stopped: ${message}`, hint ?? "");
          }),
        );
        return { shard, done };
      });
    });
    for (const { setup } of tunnels) void setup.check(log);
    for (const { settings } of tunnels) if (settings.keys) announceKeys(settings.keys, settings.name, settings.relay, log);
    let stoppingSince = 0;
    runtime.onStop(() => {
      if (!stoppingSince) {
        stoppingSince = performance.now();
        for (const agent of agents) agent.stop();
        for (const { shard } of shards.flat()) shard.stop();
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
        agent
          .run()
          .then(
            () => undefined,
            (error: unknown) => {
              if (!several || !(error instanceof AgentError)) throw error;
              log.error(`tunnel ${tunnels[i]!.settings.name}: ${error.message}`, error.hint);
              return error;
            },
          )
          .finally(() => {
            // The tunnel's first connection ended: its others end with it.
            for (const { shard } of shards[i]!) shard.stop();
            ended[i]!.resolve();
          }),
      ),
    );
    await Promise.all(shards.flat().map(({ done }) => done));
    log.update({ state: "stopped" });
    agents.forEach((agent, i) => {
      const { name, token } = tunnels[i]!.settings;
      if (!ends[i]) log.info(stoppedLine(name, agent.everUp, token !== ""), "stopped", { name });
    });
    inspector?.close();
    // Exit as a failure only when no tunnel was left running.
    return ends.every(Boolean) ? ends[0]!.exitStatus : 0;
  } catch (thrown) {
    const error = located(thrown, from);
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
  argv: string[],
): Promise<AgentOptions & { summary: string; connections: number; keys?: ConnectKeys }> {
  const name = args.name ?? randomName();
  if (!TUNNEL_NAME_PATTERN.test(name)) {
    throw new AgentError(
      "usage",
      `--name "${name}" is not a tunnel name`,
      "use 1 to 63 lowercase letters, digits and inner hyphens, like my-app",
    );
  }
  if (RESERVED_NAMES.has(name)) {
    const other = [`my-${name}`, `${name}-1`, randomName()].find((n) => TUNNEL_NAME_PATTERN.test(n) && !RESERVED_NAMES.has(n))!;
    throw new AgentError(
      "usage",
      `--name ${name} is reserved: relays keep ${[...RESERVED_NAMES].join(", ")} for themselves, so that no tunnel can pose as the relay's own service`,
      `choose another name, such as ${other} (--name ${other}, or name = "${other}" in burrow.toml)`,
    );
  }
  const relayText = args.relay ?? "http://localhost:8787";
  const schemed = withScheme(relayText);
  if (schemed) throw missingScheme(relayText, schemed, argv);
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
  const tcp = args.tcp !== undefined;
  const notForTcp = ["basic-auth", "verify-webhook"].find((key) => tcp && (lists[key]?.length ?? 0) > 0);
  if (notForTcp) {
    throw new AgentError(
      "usage",
      `--${notForTcp} checks HTTP requests; a --tcp tunnel carries bytes, so it cannot apply`,
      "a TCP tunnel admits visitors by connect key (--connect-key-file) and address (--allow-ip)",
    );
  }
  for (const flag of ["connect-key-file", "public-port"]) {
    if (!tcp && args[flag] !== undefined) {
      throw new AgentError("usage", `--${flag} applies to a --tcp tunnel only`, "leave it out, or add --tcp PORT");
    }
  }
  const keys = tcp && serving ? connectKeys(args["connect-key-file"], relay, name, args.name !== undefined, runtime) : undefined;
  const { rules, summary } = await visitorRules(name, {
    basicAuth: lists["basic-auth"] ?? [],
    allowIp: lists["allow-ip"] ?? [],
    verifyWebhook: lists["verify-webhook"] ?? [],
    connectKeys: keys?.keys ?? [],
  });
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
  const ca = [
    ...(args.ca ? [readPem(args.ca, runtime)] : []),
    ...(env("NODE_EXTRA_CA_CERTS") ? [readPem(env("NODE_EXTRA_CA_CERTS")!, runtime, "NODE_EXTRA_CA_CERTS")] : []),
  ];
  const pac = pacSettings(args, env, { ca, timeoutMs: CONNECT_TIMEOUT_MS, log });
  let proxy: NetConfig["proxy"];
  try {
    proxy = pac ? undefined : proxyFor(relay, args.proxy, env);
  } catch (error) {
    throw new AgentError("usage", (error as Error).message, "for example --proxy http://proxy.example.com:3128");
  }
  const proxyAuth = args["proxy-auth"]?.toLowerCase();
  if (proxyAuth !== undefined && !SCHEME_NAMES.includes(proxyAuth as (typeof SCHEME_NAMES)[number])) {
    throw new AgentError(
      "usage",
      `--proxy-auth ${args["proxy-auth"]} is not a scheme the agent speaks`,
      `use one of ${SCHEME_NAMES.join(", ")}, or leave it out for the strongest the proxy offers`,
    );
  }
  let credentialsFor: NetConfig["credentialsFor"];
  try {
    credentialsFor = credentialsFromSettings(args["proxy-user"], args["proxy-password"]);
  } catch (error) {
    throw new AgentError(
      "usage",
      (error as Error).message,
      "set both BURROW_PROXY_USER and BURROW_PROXY_PASSWORD (or proxy-user and proxy-password in burrow.toml)",
    );
  }
  // The runtime's FFI, for Negotiate's GSSAPI: absent on Node, loaded only when a proxy asks.
  const ffi = runtime.ffi ? () => runtime.ffi!() : undefined;
  const net: NetConfig = {
    proxy,
    pac,
    note: (line) => log.warn(line),
    ca,
    insecure,
    timeoutMs: CONNECT_TIMEOUT_MS,
    proxyAuth,
    credentialsFor,
    ffi,
  };
  const token = args["token-file"] !== undefined ? readToken(args["token-file"], args.token, runtime) : (args.token ?? "");
  // Random names are new each run, so only a chosen name has a claim worth keeping.
  // A tunnel's connections prove they are one agent's with one claim.
  const claim = (serving && args.name !== undefined ? loadClaim(relay, name, env, log) : undefined) ?? randomClaim();
  const connections = Number(args.connections ?? "1");
  if (!Number.isInteger(connections) || connections < 1 || connections > MAX_CONNECTIONS) {
    throw new AgentError(
      "usage",
      `--connections ${args.connections} is out of range`,
      `use a whole number from 1 to ${MAX_CONNECTIONS} (MAX_CONNECTIONS); 1, the default, suits all but the busiest tunnels`,
    );
  }
  return {
    relay,
    name,
    token,
    claim,
    rules,
    summary,
    heartbeatMs: heartbeat * 1000,
    version: VERSION,
    net,
    transport,
    connections,
    tcp,
    publicPort: args["public-port"] === "true",
    keys,
  };
}

/** `localhost:8787` for `http://localhost:8787`: the fix, as the whole command when it was typed. */
function missingScheme(text: string, fixed: string, argv: string[]): AgentError {
  const message = `--relay ${text} has no scheme (http:// or https://)`;
  const at = argv.findIndex((arg, i) => arg === `--relay=${text}` || (arg === text && argv[i - 1] === "--relay"));
  if (at < 0) return new AgentError("usage", message, `use ${fixed} (from BURROW_RELAY or burrow.toml's relay)`);
  const command = argv.map((arg, i) => (i !== at ? arg : arg.startsWith("--relay=") ? `--relay=${fixed}` : fixed));
  const quoted = command.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`));
  return new AgentError("usage", message, `run: agent ${quoted.join(" ")}`);
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
  const text = readUserFile(
    file,
    runtime,
    `the token file ${file}`,
    "give the path of a file whose first line is the relay's token",
  );
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
