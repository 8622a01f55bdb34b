import { SESSION_HEADER } from "@burrow/protocol";
import { EdgeError } from "../core/errors.ts";
import { handleRequest } from "../core/front.ts";
import type { RelaySettings } from "../core/settings.ts";
import { seenFrom, type TrustedProxies } from "./_address.ts";
import { PortPool, type PortRange } from "./_ports.ts";
import { Registry } from "./_registry.ts";
import type { DataDir } from "./_storage.ts";
import type { RelayHandler, RunningServer, ServeRelay } from "./server.ts";

export interface RelayConfig {
  host: string;
  port: number;
  /** PEM text of the certificate chain and key, checked (see _tls.ts). */
  tls?: { cert: string; key: string };
  /** The Worker's vars as readSettings read them: the environment's, with the flags' on top. */
  settings: RelaySettings;
  /** Where names and token counts are kept across restarts; in memory without one. */
  data?: DataDir;
  trusted: TrustedProxies;
  /** --public-url: the URL visitors use, when there is no base domain to tell it by. */
  publicUrl?: URL;
  /** Without either, visitors by path are told the relay's own host, as this machine reaches it ("localhost"). */
  localHost: string;
  /** The largest request head the relay checks itself (MAX_REQUEST_HEAD_BYTES). */
  maxHeadBytes: number;
  /** --tcp-ports: a public TCP port for each TCP tunnel, from this range, on `host`. */
  tcpPorts?: PortRange & { host: string };
}

export interface RunningRelay {
  readonly port: number;
  /** --tcp-ports' range as the flag said it ("20000-20099"), if any. */
  readonly tcpPorts?: string;
  /**
   * A graceful stop: no new connections; agents are told to reconnect (1012, as after a
   * Cloudflare deploy), visitors' WebSockets that the relay is going away (1001); what is
   * stored is written. Resolves within about two seconds.
   */
  stop(): Promise<void>;
}

/** How long a stop waits for peers to answer the close before it drops their connections. */
const STOP_GRACE_MS = 1000;
/** Then how long answers already under way may take to finish before their connections drop. */
const CLOSE_GRACE_MS = 300;

/** What a stopping relay answers new connections and visitors. */
function restarting(): Response {
  return new EdgeError(503, "relay-restarting", "The relay is restarting; retry in a moment.", {
    "Retry-After": "1",
  }).toResponse();
}

/**
 * The self-hosted relay: the core's front and tunnels in this process, served by `serve`, the
 * runtime's adapter. Resolves once it listens.
 * @throws {ListenError} from the adapter.
 */
export async function startRelay(config: RelayConfig, serve: ServeRelay): Promise<RunningRelay> {
  const ports = config.tcpPorts
    ? new PortPool(config.tcpPorts, config.tcpPorts.host, config.data?.portsFile, (name, socket, from) =>
        registry.acceptTcp(name, socket, from),
      )
    : undefined;
  const registry = new Registry(config.settings, config.data, ports);
  const local = { origin: "", stopping: false };
  const handler: RelayHandler = {
    fetch: (request, peer) =>
      // Stopping: only HTTPS-transport agents' polls and posts, which collect the 1012 (see stop).
      local.stopping && !request.headers.has(SESSION_HEADER)
        ? Promise.resolve(restarting())
        : relayRequest(request, peer, config, local.origin, registry),
    takeUpgrade: (response) => registry.upgrades.take(response),
  };
  let server: RunningServer;
  try {
    server = await serve({ host: config.host, port: config.port, tls: config.tls, maxHeadBytes: config.maxHeadBytes, handler });
  } catch (error) {
    await registry.stop();
    throw error;
  }
  local.origin = `${config.tls ? "https" : "http"}://${config.localHost}:${server.port}`;
  if (ports) ports.relayPort = server.port;
  return {
    port: server.port,
    tcpPorts: ports?.label,
    async stop() {
      // Agents are told first, while the relay still listens: an HTTPS-transport agent hears
      // it in the answer to its next poll, which may be on a new connection.
      local.stopping = true;
      registry.closeAgents(1012, "the relay is restarting; reconnect");
      // Public TCP ports close at once: their streams cannot outlive the agents' sessions here.
      ports?.stop();
      for (const { agent, link } of registry.links()) if (!agent) link.close(1001, "the relay is going away");
      const deadline = Date.now() + STOP_GRACE_MS;
      while (([...registry.links()].length > 0 || registry.agentLinkCount() > 0) && Date.now() < deadline) await sleep(25);
      for (const { link } of registry.links()) link.hardClose();
      const closing = server.close(CLOSE_GRACE_MS);
      await registry.stop();
      await closing;
    },
  };
}

async function relayRequest(
  request: Request,
  peer: string | undefined,
  config: RelayConfig,
  localOrigin: string,
  registry: Registry,
): Promise<Response> {
  try {
    const method = request.method;
    if ((method === "GET" || method === "HEAD") && hasBody(request.headers)) {
      // The runtimes' Request drops (Bun, Deno) or refuses (Node) such a body: refused here, as workerd does.
      return new EdgeError(
        400,
        "bad-request",
        `A ${method} request cannot carry a body through the relay; send the body with POST or PUT.`,
      ).toResponse();
    }
    const seen = seenFrom(peer, request.headers, config.trusted);
    const url = new URL(request.url);
    let origin = seen.proto || seen.host ? `${seen.proto ?? url.protocol.slice(0, -1)}://${seen.host ?? url.host}` : url.origin;
    // Without a base domain the front takes the public host of a tunnel reached by path from
    // the request (pathFormHost), and on Cloudflare that is one of the Worker's own routes; here
    // any client may send any Host, which an origin under `--host-header preserve` would put in
    // its links. So the host is --public-url's, or for visitors the relay's own address.
    if (!config.settings.baseDomain) {
      if (config.publicUrl) origin = config.publicUrl.origin;
      else if (url.pathname.startsWith("/t/")) origin = localOrigin;
    }
    const forwardedFor = request.headers.get("x-forwarded-for") ?? undefined;
    if (origin !== url.origin || forwardedFor !== seen.forwardedFor) {
      const headers = new Headers(request.headers);
      if (seen.forwardedFor) headers.set("x-forwarded-for", seen.forwardedFor);
      else headers.delete("x-forwarded-for");
      request = new Request(origin + url.pathname + url.search, {
        method: request.method,
        headers,
        body: request.body,
        signal: request.signal,
        redirect: "manual",
        duplex: "half",
      } as RequestInit);
    }
    return await handleRequest(request, registry.host, seen.clientIp);
  } catch (error) {
    console.error("relay | a request failed", error);
    return new Response("500 relay-error\n\nThe relay failed to handle this request; it has been logged.\n", {
      status: 500,
      headers: { "content-type": "text/plain; charset=utf-8", "x-burrow-error": "relay-error" },
    });
  }
}

function hasBody(headers: Headers): boolean {
  const length = headers.get("content-length");
  return headers.has("transfer-encoding") || (length !== null && length.trim() !== "0");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
