import { type HeaderList, HOP_BY_HOP } from "@burrow/protocol";
import { narrowCookie } from "./cookies.ts";
import { ERROR_HEADER } from "./errors.ts";
import type { RelayHost } from "./host.ts";
import { withoutTunnelCookie } from "./strays.ts";

/** Where the Worker sends visitors' requests to their tunnel's Durable Object. */
export const VISIT_URL = "https://tunnel.internal/visit";

/** Internal headers the Worker sets on the request it hands to a tunnel's Durable Object. */
export const INTERNAL = {
  tunnel: "x-burrow-tunnel",
  path: "x-burrow-path",
  publicUrl: "x-burrow-public-url",
  /** The relay's URL as agents name it, for the agent-offline page's command. */
  relayUrl: "x-burrow-relay-url",
  /**
   * The visitor's (or agent's) address as the Worker determined it (see clientAddress), for
   * the Durable Object's --allow-ip rules. Absent when the relay cannot know the address.
   */
  clientIp: "x-burrow-client-ip",
  /**
   * Which of the tunnel's objects the visit was sent to (see shards.ts): "k", "k!" when handed
   * on by another shard, "0?" when the Worker asks shard 0 for SHARDS_HEADER.
   */
  shard: "x-burrow-shard",
  /**
   * All of the above for a visit, and the fields the origin gets, as one JSON field (see
   * VisitHead): the runtime copies one field across the hop instead of one per field.
   */
  head: "x-burrow-head",
} as const;

/** A visit as the front hands it to its tunnel's core in INTERNAL.head (on Cloudflare, the Worker to the Durable Object). */
export interface VisitHead {
  tunnel: string;
  /** The shard the Worker chose (see shards.ts). */
  shard: number;
  /** Handed on by another shard, which had no agent (see TunnelObject.forward): goes no further. */
  forwarded?: boolean;
  /** The Worker asks shard 0 to state the tunnel's live shards in SHARDS_HEADER (see ShardMap). */
  asks?: boolean;
  /**
   * The visitor asks for a WebSocket (the hop carries Upgrade too, for the runtime). Absent
   * from a head of the previous release's Worker, while a deploy replaces it.
   */
  upgrade?: boolean;
  /** Path and query as forwarded. */
  path: string;
  relayUrl: string;
  clientIp: string | null;
  /** The fields the origin gets (see forwardedRequestHeaders). */
  headers: HeaderList;
}

/**
 * INTERNAL.head is used for heads up to this size in JSON; a larger one goes field by field:
 * workerd refuses a Worker -> Durable Object field of about 20 KB (see app.ts visit).
 */
export const MAX_HEAD_FIELD = 16 * 1024;

/**
 * On a response from shard 0 to a visit that asked for it (VisitHead.asks): the shards of the
 * tunnel visitors may go to now, "0,2,3". The Worker reads it and takes it off the response.
 */
export const SHARDS_HEADER = "x-burrow-shards";

const ORIGIN_DROPPED = ERROR_HEADER.toLowerCase();
const INTERNAL_NAMES = new Set<string>(Object.values(INTERNAL));
// The visitor's WebSocket handshake ends at the relay; the agent makes its own to the origin
// (Sec-WebSocket-Protocol, the offered subprotocols, does travel on).
const HANDSHAKE = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"];
/**
 * Fields that servers, frameworks and rate limiters read as the client's address, each set by
 * some proxy or CDN in front of them: a visitor's own would reach the origin as if the relay
 * had made it. The relay states the address itself in X-Forwarded-For and X-Real-IP (all of
 * X-Forwarded-* and CF-* are dropped besides, by prefix). Sources: RFC 7239 (Forwarded), nginx
 * (X-Real-IP), ingress-nginx (X-Original-Forwarded-For), Akamai and Cloudflare (True-Client-IP),
 * Fastly, Rackspace and Riverbed (X-Cluster-Client-IP), Google (X-ProxyUser-Ip,
 * X-AppEngine-User-IP), Envoy, Azure Front Door, Fly, Vercel and Netlify, and the lists that
 * Rails (Client-IP), django-ipware and request-ip try in turn (X-Forwarded, Forwarded-For,
 * X-Client-IP).
 */
const CLIENT_ADDRESS_FIELDS: readonly string[] = [
  "forwarded",
  "forwarded-for",
  "x-forwarded",
  "x-real-ip",
  "x-client-ip",
  "client-ip",
  "true-client-ip",
  "x-cluster-client-ip",
  "fastly-client-ip",
  "x-original-forwarded-for",
  "x-proxyuser-ip",
  "x-appengine-user-ip",
  "x-envoy-external-address",
  "x-azure-clientip",
  "x-azure-socketip",
  "fly-client-ip",
  "x-vercel-forwarded-for",
  "x-nf-client-connection-ip",
  "x-originating-ip",
  "x-remote-ip",
  "x-remote-addr",
];
/**
 * Fields that a proxy in front of a server sets to say which URL or host the client asked for,
 * and that servers route, check access or build links by: IIS's URL Rewrite and Symfony before
 * CVE-2018-14773 (X-Original-URL, X-Rewrite-URL), nginx setups (X-Original-URI), and the
 * host overrides some frameworks read (X-Original-Host, X-Host, X-HTTP-Host-Override). The
 * relay sets none of them: a visitor's own would let it pass `/public` to a front check and
 * `/admin` to the app, or put its host in a password-reset link.
 */
const REQUEST_TARGET_FIELDS: readonly string[] = [
  "x-original-url",
  "x-original-uri",
  "x-rewrite-url",
  "x-original-host",
  "x-host",
  "x-http-host-override",
];
const DROPPED_FROM_VISITOR = new Set<string>([
  "host",
  ...CLIENT_ADDRESS_FIELDS,
  ...REQUEST_TARGET_FIELDS,
  ...HANDSHAKE,
  ...INTERNAL_NAMES,
]);

/**
 * True for the fields a client may not send through the relay: the relay's own (`x-burrow-*`,
 * read by the Durable Object and by origins that trust the relay) and Cloudflare's (`cf-*`,
 * which only Cloudflare's edge may set; CF-Connecting-IP is read before they are dropped).
 */
export function isSpoofable(name: string): boolean {
  return name.startsWith("x-burrow-") || name.startsWith("cf-");
}

/**
 * A client's request as the Worker hands it on: without the fields of {@link isSpoofable},
 * and with INTERNAL.clientIp when the address is known.
 */
export function withoutSpoofable(request: Request, clientIp: string | undefined): Request {
  const headers = new Headers();
  for (const [name, value] of request.headers) if (!isSpoofable(name)) headers.append(name, value);
  if (clientIp) headers.set(INTERNAL.clientIp, clientIp);
  return new Request(request, { headers });
}

/**
 * The client's address, or undefined when the relay cannot know it.
 * - Cloudflare's edge sets CF-Connecting-IP on every request, replacing any a client sent, and
 *   `request.cf` carries `colo`. wrangler dev (4.86) also fills `request.cf` (a fixed sample
 *   with `colo: "DFW"`) and sets CF-Connecting-IP to the peer's address, but only when the
 *   client sent none: locally the header can be spoofed, which only matters to local tests.
 * - Plain `workerd serve` (1.20260426) sets no CF-Connecting-IP; its `request.cf` is
 *   `{ clientIp: "<peer address>:<port>" }`, the TCP peer, which no client can forge.
 */
export function clientAddress(headers: Headers, cf: unknown): string | undefined {
  const properties = (cf ?? {}) as Record<string, unknown>;
  if (typeof properties.colo === "string") return headers.get("cf-connecting-ip")?.trim() || undefined;
  if (typeof properties.clientIp === "string") return withoutPort(properties.clientIp);
  return undefined;
}

/** "127.0.0.1:5000" -> "127.0.0.1", "[::1]:5000" -> "::1"; a bare IPv6 address is kept. */
function withoutPort(address: string): string | undefined {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(address);
  if (bracketed) return bracketed[1];
  const v4 = /^([^:]+)(?::\d+)?$/.exec(address);
  if (v4) return v4[1];
  return address.includes(":") ? address : undefined;
}

/** True for the Worker -> Durable Object headers, which never reach an origin. */
export function isInternal(name: string): boolean {
  return INTERNAL_NAMES.has(name);
}

/** The field names a Connection header lists, lowercased. */
function connectionTokens(connection: string): Set<string> {
  return new Set(
    connection
      .split(",")
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

export interface VisitorContext {
  /** The visitor's address (see clientAddress), or undefined. */
  clientIp: string | undefined;
  /** "http" or "https", as the visitor reached the relay. */
  proto: string;
  /**
   * The tunnel's public host as the relay recognised it (the visited `<name>.<BASE_DOMAIN>`,
   * or pathFormHost in app.ts), never the visitor's Host as sent: the origin builds absolute URLs from X-Forwarded-Host (and from
   * Host under `--host-header preserve`), password-reset links among them.
   */
  publicHost: string;
  /** "/t/<name>" when the tunnel was reached by path, else "". */
  prefix: string;
}

/**
 * The header list the origin receives, in one pass over the visitor's fields: its end-to-end
 * fields (no hop-by-hop ones nor those its Connection names, none of {@link isSpoofable}, none
 * of DROPPED_FROM_VISITOR, and without the relay's routing cookie when reached by path), then
 * X-Forwarded-* as the relay states them. A name is compared with `_` read as `-`: CGI, WSGI
 * and Rack servers turn both into `_` (X_Real_IP is HTTP_X_REAL_IP to the app). The same pass
 * says whether the visitor asks for a WebSocket (Upgrade, hop-by-hop, is dropped from the
 * list): each `get` on the runtime's Headers is a call into it.
 */
export function forwardedRequestHeaders(incoming: Headers, visitor: VisitorContext): { list: HeaderList; upgrade: boolean } {
  let list: HeaderList = [];
  let forwardedFor: string | undefined;
  let connection: string | undefined;
  let upgrade = false;
  for (const [name, value] of incoming) {
    const key = name.includes("_") ? name.replaceAll("_", "-") : name;
    if (key.startsWith("x-forwarded-")) {
      if (name === "x-forwarded-for") forwardedFor = value;
      continue;
    }
    if (HOP_BY_HOP.has(name)) {
      if (name === "connection") connection = value;
      else if (name === "upgrade") upgrade = value.toLowerCase() === "websocket";
      continue;
    }
    if (DROPPED_FROM_VISITOR.has(key) || isSpoofable(key)) continue;
    if (name === "cookie" && visitor.prefix) {
      // The relay's routing cookie is not the origin's (see TUNNEL_COOKIE).
      const rest = withoutTunnelCookie(value);
      if (rest) list.push([name, rest]);
      continue;
    }
    list.push([name, value]);
  }
  if (connection) {
    // Fields the Connection names are hop-by-hop too (RFC 9110 section 7.6.1); mostly it names
    // only those that are anyway (keep-alive, close, upgrade).
    const named = connectionTokens(connection);
    for (const token of named) {
      if (HOP_BY_HOP.has(token) || token === "close") named.delete(token);
    }
    if (named.size > 0) list = list.filter(([name]) => !named.has(name));
  }
  list.push(["x-forwarded-proto", visitor.proto], ["x-forwarded-host", visitor.publicHost]);
  // Append rather than replace, as every proxy does: the origin trusts only the last entry.
  const chain = [forwardedFor, visitor.clientIp].filter(Boolean).join(", ");
  if (chain) list.push(["x-forwarded-for", chain]);
  if (visitor.clientIp) list.push(["x-real-ip", visitor.clientIp]);
  if (visitor.prefix) list.push(["x-forwarded-prefix", visitor.prefix]);
  return { list, upgrade };
}

/**
 * The header list sent back to the visitor: hop-by-hop fields removed, repeats kept, and no
 * X-Burrow-Error from the origin, so that the header marks the relay's own error pages only
 * (nor SHARDS_HEADER, which the Worker reads); no cookie wider than `cookieHost`, the tunnel's
 * host on the base domain ("" without one; see narrowCookie).
 * A list, not a Headers: the runtime builds the Response's from it in one call.
 */
export function responseHeaders(
  list: HeaderList,
  cookieHost: string,
): { headers: HeaderList; contentLength: string | undefined } {
  const headers: HeaderList = [];
  let contentLength: string | undefined;
  for (const entry of list) {
    const lower = entry[0].toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower === ORIGIN_DROPPED || lower === SHARDS_HEADER) continue;
    if (lower === "content-length") contentLength = entry[1];
    if (lower === "set-cookie") {
      headers.push([entry[0], narrowCookie(entry[1], cookieHost)]);
      continue;
    }
    headers.push(entry);
  }
  return { headers, contentLength };
}

/**
 * `response` with its header fields edited by `edit`: a copy, since a response from another
 * object's fetch has immutable fields. Status, WebSocket and the body as it is encoded are
 * kept: copied from the response itself, a fetched gzip body goes on compressed (given
 * `encodeBody: "manual"`, the runtime would inflate it and keep its Content-Encoding).
 */
export function withHeaders(
  host: Pick<RelayHost, "isUpgrade" | "withUpgradeHeaders">,
  response: Response,
  edit: (headers: Headers) => void,
): Response {
  if (host.isUpgrade(response)) {
    const headers = new Headers(response.headers);
    edit(headers);
    return host.withUpgradeHeaders(response, headers);
  }
  const copy = new Response(response.body, response);
  edit(copy.headers);
  return copy;
}
