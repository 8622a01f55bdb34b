// IPv4 and IPv6 addresses and CIDR ranges, parsed by hand (no runtime's `net` module in a
// Worker). Addresses become 16-byte arrays; IPv4 is mapped into ::ffff:0:0/96 (RFC 4291
// section 2.5.5.2), so "10.0.0.0/8" also matches a visitor seen as ::ffff:10.1.2.3.

/** A parsed range: the address bytes and how many leading bits must match. */
export interface Cidr {
  bytes: Uint8Array;
  bits: number;
}

/** Parses "10.0.0.0/8", "2001:db8::/32" or a bare address (/32, /128); undefined if invalid. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const bytes = parseIp(address);
  if (!bytes) return undefined;
  const v4 = !address.includes(":");
  const max = v4 ? 32 : 128;
  const prefix = slash < 0 ? max : Number(text.slice(slash + 1));
  if (slash >= 0 && !/^\d{1,3}$/.test(text.slice(slash + 1))) return undefined;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined;
  return { bytes, bits: v4 ? prefix + 96 : prefix };
}

/** True when `address` (bytes from parseIp) lies in `range`. */
export function inCidr(address: Uint8Array, range: Cidr): boolean {
  for (let bit = 0; bit < range.bits; bit += 8) {
    const i = bit / 8;
    const take = Math.min(8, range.bits - bit);
    const mask = (0xff << (8 - take)) & 0xff;
    if ((address[i]! & mask) !== (range.bytes[i]! & mask)) return false;
  }
  return true;
}

/** Parses an IPv4 or IPv6 address (IPv6 zone ids refused) into 16 bytes; undefined if invalid. */
export function parseIp(text: string): Uint8Array | undefined {
  if (!text.includes(":")) {
    const v4 = parseIpv4(text);
    if (!v4) return undefined;
    const out = new Uint8Array(16);
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  const raw = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (!/^[0-9a-fA-F:.]+$/.test(raw)) return undefined;
  const halves = raw.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return undefined;
        out.push(Number.parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((group, i) => {
    out[2 * i] = group >> 8;
    out[2 * i + 1] = group & 0xff;
  });
  return out;
}

function parseIpv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const part of parts) {
    // No leading zeros: "010" is octal to some parsers and decimal to others.
    if (!/^(?:0|[1-9]\d{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    out.push(value);
  }
  return out;
}

/**
 * Whom a client's requests and connections are counted for: an IPv4 address, or an IPv6
 * address's /64 (one subscriber usually holds a whole /64, RFC 6177, and would otherwise have
 * 2^64 addresses to spread over; rate limiters such as Cloudflare's count IPv6 the same way).
 * An IPv4-mapped IPv6 address counts as its IPv4 address. Undefined when the relay cannot
 * tell the address.
 */
export function visitorKey(ip: string | null | undefined): string | undefined {
  if (!ip) return undefined;
  const bytes = parseIp(ip);
  if (!bytes) return ip;
  if (bytes[10] === 0xff && bytes[11] === 0xff && bytes.subarray(0, 10).every((b) => b === 0)) {
    return bytes.subarray(12).join(".");
  }
  const groups: string[] = [];
  for (let i = 0; i < 8; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return `${groups.join(":")}::/64`;
}
