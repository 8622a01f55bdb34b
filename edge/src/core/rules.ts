import { hashBasicCredentials, sameBytes, type VisitorRules } from "@burrow/protocol";
import type { SignedBodies } from "./bodies.ts";
import { type Cidr, inCidr, parseCidr, parseIp } from "./cidr.ts";
import { EdgeError } from "./errors.ts";

// Who may visit a tunnel: the rules its agent set (--basic-auth, --allow-ip, --verify-webhook),
// checked by the relay before the request costs the agent a single frame. Runtime-free.

/** The rules of a tunnel, parsed once per hello. */
export class RuleSet {
  private readonly ranges: Cidr[];

  constructor(readonly rules: VisitorRules) {
    this.ranges = rules.allowIp.flatMap((text) => {
      const range = parseCidr(text);
      return range ? [range] : [];
    });
  }

  /** Rules whose text does not parse (the hello is refused for them). */
  static invalid(rules: VisitorRules): string[] {
    return rules.allowIp.filter((text) => !parseCidr(text));
  }

  /** Whether --allow-ip admits `address` (undefined: the relay cannot tell it; admitted only without ranges). */
  admitsAddress(address: ReturnType<typeof parseIp>): boolean {
    if (this.ranges.length === 0) return true;
    return address !== undefined && this.ranges.some((range) => inCidr(address, range));
  }

  get empty(): boolean {
    const { basicAuth, allowIp, webhooks, connectKeys } = this.rules;
    return basicAuth.length === 0 && allowIp.length === 0 && webhooks.length === 0 && (connectKeys?.length ?? 0) === 0;
  }

  /**
   * Checks a visitor's request. Returns the body to forward (read whole when a signature had to
   * be checked, else the stream as it came) and the headers without the relay's own credentials.
   * A body read whole is read by `bodies` (see SignedBodies.read, and the errors it throws);
   * the caller gives its bytes back there once it is forwarded.
   * @throws {EdgeError} 403 forbidden, 401 unauthorized (with WWW-Authenticate for Basic).
   */
  async check(visitor: VisitorRequest, bodies: SignedBodies): Promise<CheckedRequest> {
    const { rules } = this;
    let headers = visitor.headers;
    if (this.ranges.length > 0) {
      const address = visitor.clientIp ? parseIp(visitor.clientIp) : undefined;
      if (!address) {
        throw new EdgeError(403, "forbidden", "This tunnel admits listed addresses only, and the relay cannot tell yours.");
      }
      if (!this.ranges.some((range) => inCidr(address, range))) {
        throw new EdgeError(403, "forbidden", "This tunnel does not admit visitors from your address.");
      }
    }
    if (rules.basicAuth.length > 0) {
      const given = await basicHash(visitor.tunnel, header(headers, "authorization"));
      // Every entry is compared, so the time does not tell which (if any) matched.
      let ok = false;
      for (const hash of rules.basicAuth) ok = (given !== undefined && sameText(given, hash)) || ok;
      if (!ok) {
        throw new EdgeError(401, "unauthorized", "This tunnel asks for a user name and password.", {
          "WWW-Authenticate": `Basic realm="${visitor.tunnel}", charset="UTF-8"`,
        });
      }
      // The credentials were for the relay; the origin never sees the password.
      headers = headers.filter(([name]) => name !== "authorization");
    }
    if (rules.webhooks.length === 0) return { headers, body: visitor.body };
    // Only a request that carries a signature of the right form has its body read: reading
    // costs the relay memory, and an unsigned request can be refused without it.
    const signatures = rules.webhooks.flatMap((webhook) => {
      const value = header(headers, webhook.header);
      const hex = value?.startsWith("sha256=") ? value.slice(7) : webhook.kind === "github" ? undefined : value;
      return hex && /^[0-9a-fA-F]{64}$/.test(hex) ? [{ webhook, hex }] : [];
    });
    const names = [...new Set(rules.webhooks.map((w) => w.header))].join(" or ");
    if (signatures.length === 0) {
      throw new EdgeError(
        401,
        "unauthorized",
        `This tunnel accepts signed requests only: ${names} is missing or not a SHA-256 HMAC.`,
      );
    }
    const body =
      visitor.body instanceof Uint8Array ? visitor.body : await bodies.read(visitor.body, visitor.contentLength, visitor.from);
    for (const { webhook, hex } of signatures) {
      if (sameBytes(fromHex(hex), await hmac(webhook.secret, body))) return { headers, body };
    }
    // Given back here only if read here; one read by an earlier check is its caller's to give.
    if (!(visitor.body instanceof Uint8Array)) bodies.give(body.byteLength);
    throw new EdgeError(401, "unauthorized", `This tunnel accepts signed requests only: ${names} does not match the body.`);
  }
}

export interface VisitorRequest {
  tunnel: string;
  headers: [string, string][];
  clientIp: string | null;
  /** Whom the request counts for (see visitorKey). */
  from: string | undefined;
  /** As it came, or already read whole (a second check after the agent changed). */
  body: ReadableStream<Uint8Array> | Uint8Array | null;
  contentLength: number | undefined;
}

export interface CheckedRequest {
  headers: [string, string][];
  body: ReadableStream<Uint8Array> | Uint8Array | null;
}

function header(headers: [string, string][], name: string): string | undefined {
  return headers.find(([n]) => n === name)?.[1];
}

async function basicHash(tunnel: string, authorization: string | undefined): Promise<string | undefined> {
  const match = authorization ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization) : null;
  if (!match) return undefined;
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(
      Uint8Array.from(atob(match[1]!), (c) => c.charCodeAt(0)),
    );
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return hashBasicCredentials(tunnel, decoded.slice(0, colon), decoded.slice(colon + 1));
}

function sameText(a: string, b: string): boolean {
  const encoder = new TextEncoder();
  return sameBytes(encoder.encode(a), encoder.encode(b));
}

async function hmac(secret: string, body: Uint8Array): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, body as Uint8Array<ArrayBuffer>));
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
