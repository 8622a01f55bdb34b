import {
  CONNECT_PATH,
  type HeaderList,
  INFO_PATH,
  PROTOCOL_VERSION,
  type RelayInfo,
  SESSION_HEADER,
  SESSION_PATH,
} from "@burrow/protocol";
import { type Context, Hono } from "hono";
import { visitorKey } from "./cidr.ts";
import { withScopedCookies } from "./cookies.ts";
import { EdgeError, ERROR_HEADER, RELAY_PAGE_HEADERS } from "./errors.ts";
import {
  forwardedRequestHeaders,
  INTERNAL,
  MAX_HEAD_FIELD,
  SHARDS_HEADER,
  VISIT_URL,
  type VisitHead,
  withHeaders,
  withoutSpoofable,
} from "./headers.ts";
import type { RelayHost } from "./host.ts";
import { parseLiveShards, parseShard, ShardMap, shardObjectName } from "./shards.ts";
import { cookieValue, strayTunnel, TUNNEL_COOKIE, tunnelCookie } from "./strays.ts";
import { checkName, checkVisitorName, decoded, pathFormHost, publicUrl, relayUrl, subdomainOf } from "./urls.ts";
import { checkVisitorRequest } from "./visitor.ts";

type App = {
  Bindings: {
    host: RelayHost;
    /** The client's address as the host determined it (see visitorKey), or undefined. */
    clientIp: string | undefined;
  };
};

/**
 * The Worker's routes. A request whose Host is `<name>.<BASE_DOMAIN>` belongs to that tunnel
 * whatever its path; on the base host, `/t/<name>/...` reaches a tunnel by path (workers.dev
 * has no wildcard subdomains) and CONNECT_PATH is where agents dial in.
 */
export const app = new Hono<App>({
  // Routes see the path as the WHATWG URL parser resolves it, as a browser would send it: dot
  // segments, "%2e%2e" included, are gone. wrangler dev hands the Worker such a URL already;
  // plain workerd passes the raw target, on which `/t/a/%2e%2e/_burrow/x` would match `/t/a/*`.
  getPath: (request) => new URL(request.url).pathname,
});

app.onError(errorResponse);

function errorResponse(error: unknown): Response {
  if (error instanceof EdgeError) return error.toResponse();
  console.error("relay error", error);
  return new EdgeError(500, "relay-error", "The relay failed to handle this request; it has been logged.").toResponse();
}

/**
 * The relay's entry, on every host: `clientIp` is the visitor's address as the host knows it
 * (Cloudflare's CF-Connecting-IP, or the socket's peer). A visitor of `<name>.<BASE_DOMAIN>`
 * goes straight to its tunnel, with one URL parse and no routing: that is every request a
 * tunnel serves, and the front's share of its cost (see bench/profile.ts). Everything else goes
 * through the routes of `app`.
 */
export async function handleRequest(request: Request, host: RelayHost, clientIp: string | undefined): Promise<Response> {
  const url = new URL(request.url);
  const label = subdomainOf(url.hostname, host.settings.baseDomain);
  if (label === undefined) {
    // An HTTPS-transport agent's polls and posts (two for each request its tunnel serves) go
    // straight to their object; opening a session, which is admitted, takes the routes.
    const session = url.pathname === SESSION_PATH ? request.headers.get(SESSION_HEADER) : null;
    if (session !== null && SESSION_METHODS.has(request.method)) {
      try {
        return await sessionRequest(request, host, url, session);
      } catch (error) {
        return errorResponse(error);
      }
    }
    return app.fetch(request, { host, clientIp });
  }
  try {
    checkVisitorName(label, host);
    return await visit(request, host, clientIp, url, label, url.pathname + url.search, "");
  } catch (error) {
    return errorResponse(error);
  }
}

app.get(CONNECT_PATH, async (c) => {
  const name = c.req.query("name") ?? "";
  checkName(name);
  const shard = parseShard(c.req.query("shard"));
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new EdgeError(426, "bad-request", `${CONNECT_PATH} is where Burrow agents connect, with a WebSocket upgrade.`);
  }
  await admitConnection(c);
  return tunnel(c.env.host, name, shard).fetch(agentRequest(c, name));
});

// `agent doctor` asks whether this is a Burrow relay, which protocol it speaks, and whether it
// carries TCP tunnels (`agent doctor connect`).
app.get(INFO_PATH, (c) =>
  c.json({ burrow: true, protocol: PROTOCOL_VERSION, tcp: true } satisfies RelayInfo, 200, RELAY_PAGE_HEADERS),
);

// The HTTPS transport, for agents whose network blocks WebSockets (see SESSION_PATH): a POST
// without a session header opens one (counted like a connect). Requests that name a session in
// SESSION_HEADER never get here (see sessionRequest); a GET or DELETE without one gets the
// object's 404.
app.on(["GET", "POST", "DELETE"], SESSION_PATH, async (c) => {
  const name = c.req.query("name") ?? "";
  checkName(name);
  const shard = parseShard(c.req.query("shard"));
  if (c.req.method === "POST") await admitConnection(c);
  return tunnel(c.env.host, name, shard).fetch(agentRequest(c, name));
});

const SESSION_METHODS = new Set(["GET", "POST", "DELETE"]);

/**
 * A request of an open HTTPS-transport session, as its object gets it: the URL, the body and
 * the session's id, no other field of the client's. The session id is what the object checks.
 */
function sessionRequest(request: Request, host: RelayHost, url: URL, session: string): Promise<Response> {
  const name = url.searchParams.get("name") ?? "";
  checkName(name);
  const shard = parseShard(url.searchParams.get("shard") ?? undefined);
  return tunnel(host, name, shard).fetch(url.href, {
    method: request.method,
    headers: [[SESSION_HEADER, session]],
    body: request.method === "POST" ? request.body : null,
    redirect: "manual",
  });
}

/**
 * An agent's request as its tunnel's core gets it: no client's x-burrow-* or cf-* fields, only
 * what the front determined (see withoutSpoofable), and the public URL.
 */
function agentRequest(c: Context<App>, name: string): Request {
  const request = withoutSpoofable(c.req.raw, c.env.clientIp);
  request.headers.set(INTERNAL.publicUrl, publicUrl(new URL(c.req.url), name, c.env.host.settings.baseDomain));
  return request;
}

app.all("/t/:name{[^/]+}", (c) => {
  const url = new URL(c.req.url);
  // Relative links in the page resolve against the prefix only with the trailing slash.
  return c.redirect(`${url.pathname}/${url.search}`, 308);
});

app.all("/t/:name{[^/]+}/*", (c) => {
  const url = new URL(c.req.url);
  // The segment as sent: the forwarded path is cut after it, not after the decoded name.
  const segment = url.pathname.split("/")[2]!;
  const name = decoded(segment);
  checkVisitorName(name, c.env.host);
  const rest = url.pathname.slice(`/t/${segment}`.length);
  // One URL per tunnel: `/t/%64emo/x` is `/t/demo/x`, and cookies scoped to the one are not the other's.
  if (segment !== name) return c.redirect(`/t/${name}${rest}${url.search}`, 308);
  return visit(c.req.raw, c.env.host, c.env.clientIp, url, name, rest + url.search, `/t/${name}`);
});

app.get("/", (c) => {
  const url = new URL(c.req.url);
  const byName = publicUrl(url, "<name>", c.env.host.settings.baseDomain);
  const byPath = `${url.origin}/t/<name>/`;
  const where = byName.endsWith("/") ? byPath : `${byName}/ and ${byPath}`;
  const open = c.env.host.settings.open;
  const who = open
    ? "This relay is open: anyone who can reach it can open tunnels and claim names (its owner can require tokens with BURROW_TOKENS).\n"
    : "Agents need a token to open tunnels here.\n";
  return c.text(`Burrow relay. Tunnels are served at ${where}\n${who}`, 200, RELAY_PAGE_HEADERS);
});

// A root-relative link of a page reached by path (`/style.css` on `/t/demo/`): back to its
// tunnel (see strayTunnel). 307 keeps the method and body; no-store, since the answer depends
// on the Referer and the cookie and the next page may be another tunnel's.
app.all("*", (c) => {
  const url = new URL(c.req.url);
  const name = strayTunnel(url, c.req.raw.headers);
  if (name === undefined) return notFound();
  return new Response(null, {
    status: 307,
    headers: { Location: `/t/${name}${url.pathname}${url.search}`, "Cache-Control": "no-store" },
  });
});

const notFound = () =>
  new EdgeError(404, "not-found", "Nothing here on the relay itself. Tunnels are served at /t/<name>/.").toResponse();
app.notFound(notFound);

/**
 * Hands a visitor's request to its tunnel's Durable Object: the fields the origin will get
 * (one pass over the visitor's, see forwardedRequestHeaders), checked against the protocol's
 * limits, plus the INTERNAL fields the Durable Object reads.
 */
async function visit(
  request: Request,
  host: RelayHost,
  clientIp: string | undefined,
  url: URL,
  name: string,
  path: string,
  prefix: string,
): Promise<Response> {
  const { baseDomain } = host.settings;
  // Each property of the runtime's Request, Headers and URL read is a call into it: once each.
  const incoming = request.headers;
  const method = request.method;
  const protocol = url.protocol;
  // The Durable Object needs `upgrade`, a hop-by-hop field, to answer with a WebSocket.
  const { list, upgrade } = forwardedRequestHeaders(incoming, {
    clientIp,
    proto: protocol.slice(0, -1),
    publicHost: prefix ? pathFormHost(url, baseDomain) : url.host,
    prefix,
  });
  checkVisitorRequest({ method, path, headers: list }, host.settings.maxRequestHeadBytes);
  let body = request.body;
  // The runtime refuses a GET or HEAD with a body on the hop to the Durable Object.
  if (body !== null && (method === "GET" || method === "HEAD")) {
    if (incoming.get("content-length") !== "0") {
      throw new EdgeError(
        400,
        "bad-request",
        `A ${method} request cannot carry a body through the relay (the Workers runtime refuses one); send the body with POST or PUT.`,
      );
    }
    body = null;
  }
  // Shard 0 says which shards are live when asked, on its answer (see ShardMap).
  const now = Date.now();
  const { shard, asks } = liveShards.route(name, now);
  const visit: VisitHead = {
    tunnel: name,
    shard,
    path,
    relayUrl: relayUrl(url, baseDomain),
    clientIp: clientIp ?? null,
    headers: list,
    upgrade,
  };
  if (asks) visit.asks = true;
  const json = JSON.stringify(visit);
  let fields: HeaderList;
  if (json.length <= MAX_HEAD_FIELD) {
    fields = [[INTERNAL.head, json]];
  } else {
    fields = [
      ...list,
      [INTERNAL.tunnel, name],
      [INTERNAL.shard, asks ? "0?" : String(shard)],
      [INTERNAL.path, path],
      [INTERNAL.relayUrl, visit.relayUrl],
    ];
    if (clientIp) fields.push([INTERNAL.clientIp, clientIp]);
  }
  if (upgrade) fields.push(["upgrade", "websocket"]);
  let response: Response;
  try {
    response = await tunnel(host, name, shard).fetch(VISIT_URL, { method, headers: fields, body, redirect: "manual" });
  } catch (error) {
    console.warn(`tunnel ${name}: the request to its Durable Object failed`, error);
    throw hopTooLarge();
  }
  // workerd 1.20260426 answers a bare 431 itself, or throws, when the Worker -> Durable Object
  // request's head is over a limit of its own (below MAX_HEADER_BYTES: a 20000-byte field
  // or path already fails): the request never reached the tunnel.
  if (response.status === 431 && !response.headers.has(ERROR_HEADER)) throw hopTooLarge();
  if (asks) response = learnShards(host, name, response, now);
  if (!prefix) return response;
  // Pages name their tunnel for the root-relative requests they make without a Referer.
  const routing = isPage(host, response) && cookieValue(incoming.get("cookie"), TUNNEL_COOKIE) !== name;
  return underPrefix(host, response, prefix, routing ? tunnelCookie(name, protocol === "https:") : undefined);
}

function hopTooLarge(): EdgeError {
  return new EdgeError(
    431,
    "request-header-too-large",
    "The request's path and header fields are too large for the relay to hand to the tunnel; send fewer or smaller fields (cookies, say).",
  );
}

function isPage(host: RelayHost, response: Response): boolean {
  return !host.isUpgrade(response) && /^text\/html\b/i.test(response.headers.get("content-type") ?? "");
}

/**
 * Reached by path: root-relative redirects stay inside the prefix, and cookies too (see
 * scopeCookie); `routing`, the relay's own cookie, is added after the origin's.
 */
function underPrefix(host: RelayHost, response: Response, prefix: string, routing?: string): Response {
  const location = response.headers.get("location");
  const relocate = location?.startsWith("/") && !location.startsWith("//");
  if (!relocate && !routing && !response.headers.has("set-cookie")) return response;
  if (host.isUpgrade(response)) {
    const headers = new Headers(response.headers);
    withScopedCookies(headers, prefix);
    return host.withUpgradeHeaders(response, headers);
  }
  const rewritten = new Response(response.body, response);
  if (relocate) rewritten.headers.set("location", prefix + location);
  withScopedCookies(rewritten.headers, prefix);
  if (routing) rewritten.headers.append("set-cookie", routing);
  return rewritten;
}

/**
 * Agents' connection attempts per client address per minute, counted before any tunnel's
 * Durable Object is touched. Unknown addresses (see clientAddress) share one count.
 * @throws {EdgeError} 429 rate-limited, with Retry-After.
 */
async function admitConnection(c: Context<App>): Promise<void> {
  const key = rateKey(c.env.clientIp);
  const limit = c.env.host.settings.connectsPerMinute;
  const admission = await c.env.host.gate(key).admit(limit);
  if (admission.ok) return;
  const from = c.env.clientIp ? "this address" : "clients whose address the relay cannot see";
  throw new EdgeError(
    429,
    "rate-limited",
    `Too many connection attempts from ${from}: the limit is ${limit} a minute (CONNECTS_PER_MINUTE). Retry in ${admission.retryAfterSeconds}s.`,
    { "Retry-After": String(admission.retryAfterSeconds) },
  );
}

/** Whom connection attempts are counted for (see visitorKey); unknown addresses share one count. */
export function rateKey(ip: string | null | undefined): string {
  return visitorKey(ip) ?? "unknown";
}

/** The core of shard `shard` of tunnel `name`. */
function tunnel(host: RelayHost, name: string, shard = 0) {
  return host.tunnel(shardObjectName(name, shard));
}

/** What this isolate knows of tunnels' live shards (see ShardMap). */
const liveShards = new ShardMap();

/**
 * Takes what shard 0 said of `name`'s live shards (SHARDS_HEADER) off its answer to a visit
 * that asked, and keeps it for the visits of the next SHARDS_TTL_MS. Without the field (an
 * answer that never reached shard 0), the next visit asks again.
 */
function learnShards(host: RelayHost, name: string, response: Response, now: number): Response {
  const stated = response.headers.get(SHARDS_HEADER);
  if (stated === null) return response;
  const live = parseLiveShards(stated);
  if (live) liveShards.set(name, live, now);
  return withHeaders(host, response, (headers) => headers.delete(SHARDS_HEADER));
}
