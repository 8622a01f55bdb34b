// The PAC helpers that need neither the network nor the machine: plain functions of their
// arguments and the clock, as Netscape defined them (1996's "Navigator Proxy Auto-Config File
// Format") and browsers implement them, plus Microsoft's IPv6 extensions ("Ex", IE 7+). The
// sandbox calls these from the PAC's own FindProxyForURL; DNS and myIpAddress live in
// sandbox.ts, which owns the lookups.

import net from "node:net";

export function isPlainHostName(host: string): boolean {
  return !String(host).includes(".");
}

export function dnsDomainIs(host: string, domain: string): boolean {
  const h = String(host).toLowerCase();
  const d = String(domain).toLowerCase();
  return h.length >= d.length && h.endsWith(d);
}

/** True for an exact match, or when `host` has no domain and `hostdom` starts with it + ".". */
export function localHostOrDomainIs(host: string, hostdom: string): boolean {
  const h = String(host).toLowerCase();
  const full = String(hostdom).toLowerCase();
  if (h === full) return true;
  return !h.includes(".") && full.startsWith(`${h}.`);
}

export function dnsDomainLevels(host: string): number {
  return String(host).split(".").length - 1;
}

/** A shell expression: `*` any run, `?` one character, everything else literal; the whole string. */
export function shExpMatch(text: string, pattern: string): boolean {
  const source = String(pattern)
    .split("")
    .map((char) => (char === "*" ? ".*" : char === "?" ? "." : char.replace(/[.+^${}()|[\]\\/]/g, "\\$&")))
    .join("");
  return new RegExp(`^${source}$`, "s").test(String(text));
}

/** A dotted IPv4 address as an unsigned 32-bit number (Netscape's convert_addr); NaN-free: 0 for junk. */
export function convert_addr(ip: string): number {
  const parts = String(ip).split(".");
  if (parts.length !== 4) return 0;
  let value = 0;
  for (const part of parts) {
    const byte = /^\d{1,3}$/.test(part) ? Number(part) : Number.NaN;
    if (!(byte >= 0 && byte <= 255)) return 0;
    value = value * 256 + byte;
  }
  return value;
}

/** `address` (an IPv4 address, already resolved) within `pattern`/`mask` (dotted quads). */
export function isInNetAddress(address: string | null, pattern: string, mask: string): boolean {
  if (!address || net.isIPv4(String(address)) === false) return false;
  if (!net.isIPv4(String(pattern)) || !net.isIPv4(String(mask))) return false;
  const m = convert_addr(mask);
  return (convert_addr(address) & m) >>> 0 === (convert_addr(pattern) & m) >>> 0;
}

/** `address` (IPv4 or IPv6) within `prefix` ("10.0.0.0/8", "fe80::/10"): isInNetEx's test. */
export function inPrefix(address: string | null, prefix: string): boolean {
  const [base = "", bitsText] = String(prefix).split("/");
  if (!address || !net.isIP(String(address)) || !net.isIP(base)) return false;
  const a = ipBits(String(address));
  const b = ipBits(base);
  if (a.length !== b.length) return false;
  const bits = bitsText === undefined ? a.length : Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > a.length) return false;
  return a.slice(0, bits) === b.slice(0, bits);
}

/** An address as a string of 32 or 128 "0"/"1" characters. */
function ipBits(ip: string): string {
  if (net.isIPv4(ip)) return convert_addr(ip).toString(2).padStart(32, "0");
  let text = ip.split("%")[0]!.toLowerCase();
  // An embedded IPv4 tail (::ffff:10.0.0.1) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4) {
    const n = convert_addr(v4);
    text = text.replace(v4, `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`);
  }
  const [head = "", tail] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  return groups
    .map((group) =>
      Number.parseInt(group || "0", 16)
        .toString(2)
        .padStart(16, "0"),
    )
    .join("");
}

/** Microsoft's sortIpAddressList: IPv6 before IPv4, each in ascending order; false for junk. */
export function sortIpAddressList(list: string): string | false {
  const items = String(list)
    .split(";")
    .map((item) => item.trim())
    .filter(Boolean);
  if (items.length === 0 || !items.every((item) => net.isIP(item))) return false;
  return items
    .map((item) => ({ item, key: `${net.isIPv6(item) ? 0 : 1}${ipBits(item).padStart(128, "0")}` }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ item }) => item)
    .join(";");
}

const DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/** The trailing "GMT" argument of the time helpers: it is removed, and says to use UTC. */
function takeGmt(args: unknown[]): { args: unknown[]; utc: boolean } {
  const utc = args.length > 0 && String(args.at(-1)).toUpperCase() === "GMT";
  return { args: utc ? args.slice(0, -1) : args, utc };
}

/** In [low, high], or across the wrap when low > high (FRI to MON, DEC to FEB, 22 to 6). */
function within(value: number, low: number, high: number): boolean {
  return low <= high ? value >= low && value <= high : value >= low || value <= high;
}

export function weekdayRange(now: Date, ...raw: unknown[]): boolean {
  const { args, utc } = takeGmt(raw);
  const day = utc ? now.getUTCDay() : now.getDay();
  const low = DAYS.indexOf(String(args[0]).toUpperCase());
  const high = args.length > 1 ? DAYS.indexOf(String(args[1]).toUpperCase()) : low;
  if (low < 0 || high < 0) return false;
  return within(day, low, high);
}

/**
 * dateRange(day | month | year | day, month | ... , ["GMT"]): one to six arguments, each a day
 * of the month (1-31), a month name, or a four-digit year; one of a kind is a match of that
 * field, two are a range (inclusive, wrapping for days and months).
 */
export function dateRange(now: Date, ...raw: unknown[]): boolean {
  const { args, utc } = takeGmt(raw);
  const parts = { day: utc ? now.getUTCDate() : now.getDate(), month: utc ? now.getUTCMonth() : now.getMonth() };
  const year = utc ? now.getUTCFullYear() : now.getFullYear();
  type Field = { kind: "day" | "month" | "year"; value: number };
  const fields: Field[] = [];
  for (const arg of args) {
    const month = MONTHS.indexOf(String(arg).toUpperCase());
    const n = Number(arg);
    if (month >= 0) fields.push({ kind: "month", value: month });
    else if (Number.isInteger(n) && n >= 1 && n <= 31) fields.push({ kind: "day", value: n });
    else if (Number.isInteger(n) && n >= 1000) fields.push({ kind: "year", value: n });
    else return false;
  }
  if (fields.length === 0) return false;
  if (fields.length === 1) {
    const [only] = fields as [Field];
    return only.kind === "year" ? year === only.value : parts[only.kind] === only.value;
  }
  if (fields.length % 2 !== 0) return false;
  const half = fields.length / 2;
  const from = fields.slice(0, half);
  const to = fields.slice(half);
  if (from.some((field, i) => field.kind !== to[i]!.kind)) return false;
  // Compare as one number of the given fields, most significant first: year, month, day.
  const order = ["year", "month", "day"] as const;
  const kinds = new Set(from.map((field) => field.kind));
  const current = order.reduce((sum, kind) => (kinds.has(kind) ? sum * 100 + (kind === "year" ? year : parts[kind]) : sum), 0);
  const pick = (list: Field[]) =>
    order.reduce((sum, kind) => (kinds.has(kind) ? sum * 100 + list.find((f) => f.kind === kind)!.value : sum), 0);
  const low = pick(from);
  const high = pick(to);
  return kinds.has("year") ? current >= low && current <= high : within(current, low, high);
}

/**
 * timeRange(hour) | (h1, h2) | (h1, m1, h2, m2) | (h1, m1, s1, h2, m2, s2), ["GMT"]: the end is
 * inclusive to its last second (h2:59:59 for two arguments), wrapping past midnight, as
 * Mozilla's pac_utils.js reads Netscape's definition.
 */
export function timeRange(now: Date, ...raw: unknown[]): boolean {
  const { args, utc } = takeGmt(raw);
  const n = args.map(Number);
  if (n.some((value) => !Number.isInteger(value))) return false;
  const current =
    (utc ? now.getUTCHours() : now.getHours()) * 3600 +
    (utc ? now.getUTCMinutes() : now.getMinutes()) * 60 +
    (utc ? now.getUTCSeconds() : now.getSeconds());
  const at = (h = 0, m = 0, s = 0) => h * 3600 + m * 60 + s;
  const [a, b, c, d, e, f] = n;
  switch (n.length) {
    case 1:
      return within(current, at(a), at(a, 59, 59));
    case 2:
      return within(current, at(a), at(b, 59, 59));
    case 4:
      return within(current, at(a, b), at(c, d, 59));
    case 6:
      return within(current, at(a, b, c), at(d, e, f));
    default:
      return false;
  }
}
