import type { Credentials } from "./proxy-auth/scheme.ts";

/** An HTTP proxy the agent tunnels through with CONNECT. */
export interface ProxyConfig {
  host: string;
  port: number;
  /** The URL's user and password, percent-decoded ("DOMAIN%5Cuser" is DOMAIN\user). */
  credentials: Credentials | undefined;
  /** The URL with the password hidden, for messages. */
  display: string;
  /** Where the setting came from: "--proxy" or the environment variable's name. */
  source: string;
}

/** The variables consulted, in order, for an https:// relay (curl's and most tools' convention). */
const HTTPS_VARS = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
const HTTP_VARS = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];
/** Every proxy variable the agent reads (Deno's task grants exactly these and the agent's own). */
export const PROXY_ENV_VARS = [...new Set([...HTTPS_VARS, ...HTTP_VARS, "no_proxy", "NO_PROXY"])];

/**
 * The proxy to use for `target`: `--proxy` if given (an empty value or "none" means none),
 * otherwise HTTPS_PROXY / HTTP_PROXY / ALL_PROXY by the target's scheme, unless NO_PROXY
 * matches the target's host.
 * @throws {Error} when the proxy URL cannot be used (its message says why).
 */
export function proxyFor(
  target: URL,
  flag: string | undefined,
  env: (name: string) => string | undefined,
): ProxyConfig | undefined {
  if (flag !== undefined) return flag === "" || flag === "none" ? undefined : parseProxy(flag, "--proxy");
  // A relay on this machine (npm run dev) is never reached through a proxy from the environment.
  if (/^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(target.hostname)) return undefined;
  const vars = target.protocol === "https:" || target.protocol === "wss:" ? HTTPS_VARS : HTTP_VARS;
  const name = vars.find((v) => env(v));
  if (!name) return undefined;
  if (bypassed(target, env("no_proxy") ?? env("NO_PROXY") ?? "")) return undefined;
  return parseProxy(env(name)!, name);
}

function parseProxy(text: string, source: string): ProxyConfig {
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new Error(`the proxy ${JSON.stringify(text)} from ${source} is not a URL (expected http://[user:password@]host:port)`);
  }
  if (url.protocol !== "http:") {
    throw new Error(
      `the proxy from ${source} is ${url.protocol}// but the agent speaks only to http:// proxies (CONNECT); most corporate proxies are http:// even for https traffic`,
    );
  }
  const credentials = url.username
    ? { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password), source: `the proxy URL (${source})` }
    : undefined;
  const user = url.username ? `${url.username}${url.password ? ":***" : ""}@` : "";
  return {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: Number(url.port) || 80,
    credentials,
    display: `http://${user}${url.host}`,
    source,
  };
}

/**
 * NO_PROXY as curl reads it: comma- or space-separated hosts, `*` for all, a leading dot or
 * none both match subdomains, an optional `:port`, and IPv4 addresses or CIDR ranges.
 */
export function bypassed(target: URL, noProxy: string): boolean {
  const host = target.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = target.port || (target.protocol === "https:" || target.protocol === "wss:" ? "443" : "80");
  for (const raw of noProxy.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") return true;
    const [pattern = "", entryPort] = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(entry)?.slice(1) ?? [];
    if (entryPort && entryPort !== port) continue;
    if (pattern.includes("/")) {
      if (inCidr(host, pattern)) return true;
      continue;
    }
    const domain = pattern.replace(/^\*?\./, "");
    if (host === domain || host.endsWith(`.${domain}`)) return true;
  }
  return false;
}

function inCidr(host: string, cidr: string): boolean {
  const [base = "", bitsText = "32"] = cidr.split("/");
  const a = ipv4(host);
  const b = ipv4(base);
  const bits = Number(bitsText);
  if (a === undefined || b === undefined || !(bits >= 0 && bits <= 32)) return false;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (a & mask) >>> 0 === (b & mask) >>> 0;
}

function ipv4(text: string): number | undefined {
  const parts = text.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined;
  return (((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0) as number;
}
