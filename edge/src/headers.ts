import { type HeaderList, HOP_BY_HOP } from "@burrow/protocol";

/** Internal headers the Worker sets on the request it hands to a tunnel's Durable Object. */
export const INTERNAL = {
  tunnel: "x-burrow-tunnel",
  path: "x-burrow-path",
  publicUrl: "x-burrow-public-url",
  /** The visitor's address, when the relay can know it (see app.ts). */
  clientIp: "x-burrow-client-ip",
} as const;

const INTERNAL_NAMES = new Set<string>(Object.values(INTERNAL));
// The visitor's WebSocket handshake ends at the relay; the agent makes its own to the origin
// (Sec-WebSocket-Protocol, the offered subprotocols, does travel on).
const HANDSHAKE = ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-accept"];
const DROPPED_FROM_VISITOR = new Set<string>(["host", ...HANDSHAKE, ...INTERNAL_NAMES]);

/** True for the Worker -> Durable Object headers, which never reach an origin. */
export function isInternal(name: string): boolean {
  return INTERNAL_NAMES.has(name);
}

/** Removes hop-by-hop fields, including those the Connection header names. */
export function withoutHopByHop(headers: Headers): HeaderList {
  const named = new Set(
    (headers.get("connection") ?? "")
      .split(",")
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
  const list: HeaderList = [];
  for (const [name, value] of headers) {
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    list.push([name, value]);
  }
  return list;
}

export interface VisitorContext {
  /** The visitor's address, from CF-Connecting-IP (set by Cloudflare and by wrangler dev). */
  clientIp: string | null;
  /** "http" or "https", as the visitor reached the relay. */
  proto: string;
  /** The Host the visitor asked for. */
  host: string;
  /** "/t/<name>" when the tunnel was reached by path, else "". */
  prefix: string;
}

/** The header list the origin receives: the visitor's end-to-end fields plus X-Forwarded-*. */
export function forwardedRequestHeaders(incoming: Headers, visitor: VisitorContext): HeaderList {
  const list = withoutHopByHop(incoming).filter(([name]) => !DROPPED_FROM_VISITOR.has(name));
  const forwardedFor = incoming.get("x-forwarded-for");
  const others = list.filter(([name]) => !name.startsWith("x-forwarded-"));
  others.push(["x-forwarded-proto", visitor.proto], ["x-forwarded-host", visitor.host]);
  // Append rather than replace, as every proxy does: the origin trusts only the last entry.
  const chain = [forwardedFor, visitor.clientIp].filter(Boolean).join(", ");
  if (chain) others.push(["x-forwarded-for", chain]);
  if (visitor.prefix) others.push(["x-forwarded-prefix", visitor.prefix]);
  return others;
}

/** The header list sent back to the visitor: hop-by-hop fields removed, repeats kept. */
export function responseHeaders(list: HeaderList): Headers {
  const headers = new Headers();
  for (const [name, value] of list) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    headers.append(name, value);
  }
  return headers;
}
