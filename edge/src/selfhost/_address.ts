import { type Cidr, inCidr, parseCidr, parseIp } from "../core/cidr.ts";

/**
 * Where a visitor's (or an agent's) address comes from on a self-hosted relay: the TCP peer,
 * or, when that peer is a proxy named by `--trust-proxy`, the X-Forwarded-For it states.
 * Cloudflare's edge tells a Worker the address itself (CF-Connecting-IP); a process facing the
 * network, or behind nginx or Caddy, has to decide whom to believe.
 */
export class TrustedProxies {
  private constructor(private readonly ranges: Cidr[]) {}

  /**
   * "10.0.0.1,192.168.0.0/16,::1": addresses or CIDR ranges.
   * @throws {Error} naming the entry that is neither.
   */
  static parse(list: string[]): TrustedProxies {
    const ranges: Cidr[] = [];
    for (const entry of list
      .flatMap((item) => item.split(","))
      .map((item) => item.trim())
      .filter(Boolean)) {
      const range = parseCidr(entry);
      if (!range) throw new Error(`"${entry}" is not an IP address or a CIDR range`);
      ranges.push(range);
    }
    return new TrustedProxies(ranges);
  }

  get none(): boolean {
    return this.ranges.length === 0;
  }

  trusts(address: string | undefined): boolean {
    if (!address || this.ranges.length === 0) return false;
    const bytes = parseIp(address);
    return bytes !== undefined && this.ranges.some((range) => inCidr(bytes, range));
  }
}

/** "::ffff:127.0.0.1" -> "127.0.0.1" (Node reports IPv4 peers of a dual-stack socket so). */
export function unmapped(address: string | undefined): string | undefined {
  if (!address) return undefined;
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address;
}

export interface Seen {
  /** The client's address, or undefined when a trusted proxy states none the relay can read. */
  clientIp: string | undefined;
  /** What the request's X-Forwarded-For should say on to the front: the hops before the client, or nothing. */
  forwardedFor: string | undefined;
  /** "https" when a trusted proxy says the client used it. */
  proto: string | undefined;
}

/**
 * The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost
 * address of X-Forwarded-For that is not a trusted proxy's (each proxy appends the address it
 * saw, so everything left of that one was written by the client and proves nothing). A client's
 * own X-Forwarded-For, from an untrusted peer, is dropped.
 */
export function seenFrom(peer: string | undefined, headers: Headers, trusted: TrustedProxies): Seen {
  const address = unmapped(peer);
  if (!trusted.trusts(address)) return { clientIp: address, forwardedFor: undefined, proto: undefined };
  const hops = (headers.get("x-forwarded-for") ?? "")
    .split(",")
    .map((hop) => unmapped(hop.trim()))
    .filter((hop): hop is string => !!hop && parseIp(hop) !== undefined);
  let at = hops.length - 1;
  while (at > 0 && trusted.trusts(hops[at])) at--;
  const proto = headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase();
  return {
    // A trusted proxy that states no address: the proxy's own is the best the relay knows.
    clientIp: hops[at] ?? address,
    forwardedFor: at > 0 ? hops.slice(0, at).join(", ") : undefined,
    proto: proto === "https" || proto === "http" ? proto : undefined,
  };
}
