// Tunnel names and the relay's URLs: which names a visitor or agent may use, and how a
// tunnel's public URL, the relay's own URL and the path form's host are made from what was visited.
import { isPunycodeName, PUNYCODE_PREFIX, RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import { EdgeError } from "./errors.ts";
import type { RelayHost } from "./host.ts";

/** Echoes no client input: a name that fails the pattern is "that name". */
export function checkName(name: string): void {
  if (!TUNNEL_NAME_PATTERN.test(name)) {
    throw new EdgeError(
      400,
      "bad-request",
      "That name is not a tunnel name: use 1 to 63 lowercase letters, digits and inner hyphens.",
    );
  }
}

/**
 * For visitors: reserved names (RESERVED_NAMES) are nobody's tunnel, nor punycode ones unless
 * ALLOW_PUNYCODE_NAMES (no agent may hold them), then checkName.
 */
export function checkVisitorName(name: string, host: RelayHost): void {
  if (RESERVED_NAMES.has(name)) {
    const shown = TUNNEL_NAME_PATTERN.test(name) ? `the name "${name}"` : "that name";
    throw new EdgeError(404, "not-found", `No tunnel here: ${shown} is reserved by the relay.`);
  }
  checkName(name);
  if (isPunycodeName(name) && !host.settings.allowPunycodeNames) {
    throw new EdgeError(
      404,
      "not-found",
      `No tunnel here: this relay refuses names that start with ${PUNYCODE_PREFIX} (punycode, which browsers show as look-alikes of other names).`,
    );
  }
}

/** The percent-decoded path segment, or the segment itself when it does not decode. */
export function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/** `demo.localhost` with base `localhost` -> "demo"; `a.b.localhost` -> "a.b"; else undefined. */
export function subdomainOf(hostname: string, base: string): string | undefined {
  if (!base || !hostname.endsWith(`.${base}`)) return undefined;
  return hostname.slice(0, -base.length - 1);
}

/** The relay's own URL, what agents pass as --relay: the base domain's, or the host's itself. */
export function relayUrl(visited: URL, base: string): string {
  const { hostname, protocol, port } = visited;
  if (base && hostname.endsWith(`.${base}`)) return `${protocol}//${base}${port ? `:${port}` : ""}`;
  return visited.origin;
}

/**
 * The host a tunnel reached by path is served on, as the origin is told it (X-Forwarded-Host):
 * the base domain, with the port the visitor used, whatever Host the visitor sent, since a
 * relay that is not behind Cloudflare's routes (wrangler dev, workerd serve) is reached with
 * any Host. Without a base domain, the visited host: on Cloudflare a Worker only gets requests
 * for its own routes and workers.dev host. (On `<name>.<BASE_DOMAIN>` the visited host is the
 * tunnel's: routing checked it.)
 */
export function pathFormHost(visited: URL, base: string): string {
  if (!base) return visited.host;
  return visited.port ? `${base}:${visited.port}` : base;
}

/** The URL visitors use: a subdomain when the agent reached the relay on its base domain. */
export function publicUrl(connect: URL, name: string, base: string): string {
  const { hostname, protocol, port } = connect;
  if (base && (hostname === base || hostname.endsWith(`.${base}`))) {
    return `${protocol}//${name}.${base}${port ? `:${port}` : ""}`;
  }
  return `${connect.origin}/t/${name}/`;
}
