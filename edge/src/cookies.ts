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
    const name = attribute.split("=", 1)[0]!.trim().toLowerCase();
    if (name === "domain") continue;
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
