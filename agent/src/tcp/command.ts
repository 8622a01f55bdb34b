import net from "node:net";
import process from "node:process";
import { Agent, type AgentOptions, type LinkService } from "../agent.ts";
import { AgentError } from "../errors.ts";
import type { Log } from "../log.ts";
import { readUserFile } from "../origin-setup.ts";
import type { Runtime } from "../runtime.ts";
import { type ClientEnd, type ClientSocket, LocalClients } from "./clients.ts";

/**
 * How long --stdio, told to stop, waits for its open connection to close both ways: a round
 * trip to the service and back, normally; ssh waits for nothing once it has sent its SIGHUP.
 */
const STDIO_LINGER_MS = 5000;

/** What `agent connect` was asked for, beside the way to the relay. */
export interface ConnectRequest {
  name: string;
  key: string;
  /** Where local clients connect; undefined with --stdio. */
  listen?: { host: string; port: number };
}

/**
 * Reads `agent connect NAME`'s own settings: --listen or --stdio, and the key.
 * @throws {AgentError} "usage" for what is missing or wrong.
 */
export function connectRequest(name: string, args: Record<string, string>, runtime: Runtime): ConnectRequest {
  const stdio = args.stdio === "true";
  if (stdio === (args.listen !== undefined)) {
    throw new AgentError(
      "usage",
      stdio ? "--listen and --stdio are both given" : "agent connect needs --listen HOST:PORT or --stdio",
      "--listen 127.0.0.1:2222 for any client (ssh -p 2222 localhost), --stdio for ssh's ProxyCommand",
    );
  }
  const key = connectKey(name, args, runtime);
  if (stdio) return { name, key };
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$/.exec(args.listen!);
  const port = Number(match?.[2]);
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new AgentError(
      "usage",
      `--listen ${JSON.stringify(args.listen)} is not HOST:PORT`,
      "for example --listen 127.0.0.1:2222",
    );
  }
  return { name, key, listen: { host: match[1]?.replace(/^\[|\]$/g, "") ?? "127.0.0.1", port } };
}

/**
 * The tunnel's key for `agent connect NAME` (and `agent doctor connect NAME`): the first line
 * of --key-file, else --key or BURROW_CONNECT_KEY.
 * @throws {AgentError} "usage" when there is none, or the file cannot be read.
 */
export function connectKey(name: string, args: Record<string, string>, runtime: Runtime, command = "agent connect"): string {
  let key = args.key ?? "";
  if (args["key-file"] !== undefined) {
    const text = readUserFile(
      args["key-file"],
      runtime,
      `the key file ${args["key-file"]}`,
      "give a file whose first line is the tunnel's key",
    );
    key = text.split(/\r?\n/, 1)[0]!.trim();
  }
  if (!key) {
    throw new AgentError(
      "usage",
      `${command} ${name} needs the tunnel's key`,
      "its owner's agent printed it when the tunnel started: pass it with --key-file FILE or BURROW_CONNECT_KEY",
    );
  }
  return key;
}

/**
 * `agent connect NAME`: a session with the relay like an agent's (the same proxies, CAs,
 * transports, heartbeats and resume after a cut), whose streams are local clients' connections.
 * Returns the exit status: --stdio's connection closed cleanly (0) or was reset (1).
 */
export async function connect(options: AgentOptions, request: ConnectRequest, runtime: Runtime, log: Log): Promise<number> {
  let status = 0;
  let agent: Agent | undefined;
  let stopping = false;
  /** --stdio was told to stop while its connection was open: it closes first, quietly. */
  let lingering = false;
  const stop = () => {
    stopping = true;
    agent?.stop();
  };
  const clients = new LocalClients(log, (end: ClientEnd) => {
    if (request.listen || stopping) return;
    // --stdio: its one connection is the command's life.
    status = end.reset ? 1 : 0;
    if (end.reset && !lingering) log.error(`the connection to ${request.name} was reset: ${end.why}`);
    stop();
  });
  let announced = false;
  const service: LinkService = {
    label: `tcp ${request.name}`,
    streams: (send) => clients.streams(send),
    up: (frame, resumed, open) => {
      if (resumed)
        return log.info(`connection to the relay resumed; ${open} connection${open === 1 ? "" : "s"} go on`, "resumed");
      if (announced) return log.info(`connected to tunnel ${frame.name} again (a new session)`, "up");
      announced = true;
      if (!request.listen) {
        log.info(`connected to tunnel ${frame.name}`, "up", { name: frame.name });
        return;
      }
      const at = listenLabel(server);
      log.result(`connected to tunnel ${frame.name}: connect to ${at}`, "up", { name: frame.name, listen: at });
    },
  };
  agent = new Agent({ ...options, connect: { key: request.key } }, service, runtime, log);
  let server: net.Server | undefined;
  if (request.listen) {
    server = await listen(request.listen, (socket) => {
      socket.setNoDelay(true);
      clients.add(socket);
    });
  } else {
    clients.add(stdioSocket());
  }
  // ssh ends its ProxyCommand with SIGHUP as it exits, its last bytes and its EOF just sent:
  // the connection gets a moment to close both ways (stopping at once resets it at the relay,
  // and the tunnel's agent logs every ssh session as reset). Nobody reads on, nothing to say.
  runtime.onStop(() => {
    if (stopping) return;
    if (request.listen || lingering || clients.open === 0) return stop();
    lingering = true;
    setTimeout(stop, STDIO_LINGER_MS);
  });
  try {
    await agent.run();
  } finally {
    server?.close();
  }
  return status;
}

function listenLabel(server: net.Server | undefined): string {
  const address = server?.address();
  if (!address || typeof address === "string") return "";
  return `${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
}

/** Listens for local clients. @throws {AgentError} "usage" when the address is taken or not ours. */
function listen(at: { host: string; port: number }, accept: (socket: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen: a client's EOF (scp's end of input) closes that direction only.
    const server = net.createServer({ allowHalfOpen: true }, accept);
    server.once("error", (error: NodeJS.ErrnoException) => {
      const taken = error.code === "EADDRINUSE";
      reject(
        new AgentError(
          "usage",
          `cannot listen on ${at.host}:${at.port}: ${taken ? "the port is in use" : error.message}`,
          taken
            ? "pick another port with --listen, or stop what holds it"
            : "give a local address and a free port, like --listen 127.0.0.1:2222",
        ),
      );
    });
    server.listen(at.port, at.host, () => resolve(server));
  });
}

/** Stdin and stdout as one connection: ssh's ProxyCommand talks to `connect --stdio` this way. */
function stdioSocket(): ClientSocket {
  const stdin = process.stdin;
  const stdout = process.stdout;
  return {
    write: (bytes, written) => stdout.write(bytes, written),
    end: () => stdout.end(),
    destroy: () => {
      stdin.destroy();
      stdout.destroy();
    },
    pause: () => stdin.pause(),
    resume: () => stdin.resume(),
    on(event, listener) {
      // stdin's 'close' follows its 'end' at once: the connection is not over while stdout writes.
      if (event === "data" || event === "end") stdin.on(event, listener as (...args: unknown[]) => void);
      else if (event === "error") {
        stdin.on("error", listener as (...args: unknown[]) => void);
        stdout.on("error", listener as (...args: unknown[]) => void);
      }
      return this;
    },
  };
}
