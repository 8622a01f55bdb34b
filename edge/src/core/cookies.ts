/**
 * The Domain attribute's value as a browser reads it (RFC 6265 section 5.2.3), or undefined
 * when `attribute` is not a Domain: the name before the first "=", trimmed and in any case;
 * the value trimmed, without one leading dot, lowercased. JavaScript's trim() removes more
 * than the RFC's WSP, so an attribute a browser takes for a Domain is always found here too.
 */
function domainOf(attribute: string): string | undefined {
  const equals = attribute.indexOf("=");
  const name = (equals < 0 ? attribute : attribute.slice(0, equals)).trim().toLowerCase();
  if (name !== "domain") return undefined;
  const value = equals < 0 ? "" : attribute.slice(equals + 1).trim();
  return (value.startsWith(".") ? value.slice(1) : value).toLowerCase();
}

/**
 * A Set-Cookie of a tunnel served at `host` (`demo.<base domain>`; "" for none), with no
 * Domain wider than that host. A cookie's Domain makes browsers send it to every host under
 * that domain (RFC 6265 section 5.3 step 6): `Domain=<base domain>` from one tunnel would reach every other tunnel
 * (session fixation, cookie tossing). Only a Domain equal to `host` is kept (as `Domain=<host>`:
 * the relay serves no host under a tunnel's, names being single labels); any other is dropped,
 * which leaves a host-only cookie, for `host` alone. Browsers use the last Domain attribute,
 * so every one is looked at. Other attributes keep their order and spelling.
 */
export function narrowCookie(setCookie: string, host: string): string {
  const [pair = "", ...attributes] = setCookie.split(";");
  const kept: string[] = [];
  let changed = false;
  for (const attribute of attributes) {
    const domain = domainOf(attribute);
    if (domain === undefined) {
      kept.push(attribute);
      continue;
    }
    changed = true;
    if (host && domain === host) kept.push(` Domain=${host}`);
  }
  return changed ? [pair, ...kept].join(";") : setCookie;
}

/**
 * Tunnels reached by path share the relay's web origin, and cookies are scoped by host and
 * path only (RFC 6265 section 5.1.4), so one tunnel's `Path=/` cookie would reach every
 * other tunnel's origin. Each Set-Cookie is moved under the tunnel's prefix instead:
 * `Path=/x` -> `Path=/t/<name>/x`, no Path or `Path=/` -> `Path=/t/<name>/`, and any Domain
 * attribute is dropped (it would widen the cookie to sibling hosts). Other attributes keep
 * their order.
 */
export function scopeCookie(setCookie: string, prefix: string): string {
  const [pair = "", ...attributes] = setCookie.split(";");
  const kept: string[] = [];
  let path: string | undefined;
  for (const attribute of attributes) {
    if (domainOf(attribute) !== undefined) continue;
    const name = attribute.split("=", 1)[0]!.trim().toLowerCase();
    if (name === "path") {
      // RFC 6265 section 5.2.4: a Path that does not start with "/" means the default path.
      const value = attribute.slice(attribute.indexOf("=") + 1).trim();
      path = `${prefix}${value.startsWith("/") ? value : "/"}`;
      kept.push(` Path=${path}`);
      continue;
    }
    kept.push(attribute);
  }
  if (path === undefined) kept.push(` Path=${prefix}/`);
  return [pair, ...kept].join(";");
}

/** Scopes every Set-Cookie of `headers` to `prefix` in place (see scopeCookie); false when there was none. */
export function withScopedCookies(headers: Headers, prefix: string): boolean {
  // workerd has getSetCookie (the 2023-03-01 types declare it; this workspace's default types lag).
  const cookies = (headers as Headers & { getSetCookie(): string[] }).getSetCookie();
  if (cookies.length === 0) return false;
  headers.delete("set-cookie");
  for (const cookie of cookies) headers.append("set-cookie", scopeCookie(cookie, prefix));
  return true;
}
