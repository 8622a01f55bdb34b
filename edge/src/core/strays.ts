import { RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";

/**
 * Root-relative links under the path form: a page at `/t/demo/` that asks for `/style.css`
 * reaches the relay's base host, not its tunnel. The relay sends such a request back to the
 * tunnel the page came from, known by its Referer (same origin only) or, when the page sent
 * none (`Referrer-Policy: no-referrer`), by TUNNEL_COOKIE.
 *
 * The cookie is no secret and grants nothing: it only routes, to a tunnel any visitor may
 * request by URL anyway. SameSite=Lax keeps it off other sites' subresource requests, and
 * HttpOnly out of tunnel pages' scripts (which share the relay's origin).
 */
export const TUNNEL_COOKIE = "burrow_tunnel";

/** The paths that are the relay's own, never a tunnel's: `/`, `/t...`, `/_burrow...`. */
function isRelayPath(pathname: string): boolean {
  return pathname === "/" || /^\/(?:t|_burrow)(?:\/|$)/.test(pathname);
}

function isVisitorName(name: string | undefined): name is string {
  return name !== undefined && TUNNEL_NAME_PATTERN.test(name) && !RESERVED_NAMES.has(name);
}

/**
 * The tunnel whose page asked for `url` (a request on the relay's base host), or undefined
 * when it is one of the relay's own paths or no tunnel can be told.
 * - A Referer decides when there is one: `<this origin>/t/<name>/...`, and nothing else
 *   (another origin, or this one outside `/t/`, is no tunnel's page).
 * - Without one, TUNNEL_COOKIE, unless Sec-Fetch-Site says another site (or the address bar,
 *   `none`) made the request.
 */
export function strayTunnel(url: URL, headers: Headers): string | undefined {
  if (isRelayPath(url.pathname)) return undefined;
  const referer = headers.get("referer");
  if (referer !== null) {
    let from: URL;
    try {
      from = new URL(referer);
    } catch {
      return undefined;
    }
    if (from.origin !== url.origin) return undefined;
    const name = /^\/t\/([^/]+)\//.exec(from.pathname)?.[1];
    return isVisitorName(name) ? name : undefined;
  }
  const site = headers.get("sec-fetch-site");
  if (site !== null && site !== "same-origin") return undefined;
  const name = cookieValue(headers.get("cookie"), TUNNEL_COOKIE);
  return isVisitorName(name) ? name : undefined;
}

/** The Set-Cookie that routes this visitor's root-relative requests to `name` (see TUNNEL_COOKIE). */
export function tunnelCookie(name: string, secure: boolean): string {
  return `${TUNNEL_COOKIE}=${name}; Path=/; SameSite=Lax; HttpOnly${secure ? "; Secure" : ""}`;
}

/** The first value of cookie `name` in a Cookie header (RFC 6265 section 5.4), or undefined. */
export function cookieValue(header: string | null, name: string): string | undefined {
  for (const pair of header?.split(";") ?? []) {
    const at = pair.indexOf("=");
    if (at !== -1 && pair.slice(0, at).trim() === name) return pair.slice(at + 1).trim();
  }
  return undefined;
}

/** A Cookie header without TUNNEL_COOKIE (the relay's, never the origin's), or undefined when nothing is left. */
export function withoutTunnelCookie(header: string): string | undefined {
  const kept = header.split(";").filter((pair) => pair.split("=", 1)[0]!.trim() !== TUNNEL_COOKIE);
  const joined = kept
    .map((pair) => pair.trim())
    .filter(Boolean)
    .join("; ");
  return joined || undefined;
}
