// The shape every proxy authentication scheme implements (Basic, Digest, NTLM, Negotiate): a
// small state machine that turns the proxy's challenge into the next Proxy-Authorization value.
// The dial loop (../dial.ts) is written once for all of them: it sends CONNECT, reads each 407,
// hands the scheme its challenge and sends what the scheme answers, on the same connection.
import type { Ffi } from "../../runtime.ts";

/** One challenge of a `Proxy-Authenticate` field (RFC 9110 section 11.6.1). */
export interface Challenge {
  /** The scheme as the proxy wrote it ("NTLM", "Digest"). */
  scheme: string;
  /** The scheme lowercased, for comparisons (scheme names are case-insensitive). */
  name: string;
  /** The token68 form: NTLM's and Negotiate's base64 tokens. */
  token?: string;
  /** The auth-param form (Digest's realm, nonce...): names lowercased, values unquoted. */
  params: Map<string, string>;
}

/** Credentials for a proxy, never printed (`display` hides the password). */
export interface Credentials {
  /** The user as given: "alice", "CORP\\alice" or "alice@corp.example". */
  user: string;
  password: string;
  /** Where they came from, for messages: "the proxy URL", "BURROW_PROXY_USER"... */
  source: string;
}

/** What a scheme knows about the connection it authenticates. */
export interface AuthContext {
  /** The proxy's host as configured (Negotiate asks for a ticket for HTTP@<this>). */
  proxyHost: string;
  proxyPort: number;
  /** The CONNECT target, `host:443`: Digest's `uri`. */
  target: string;
  /** undefined when the user gave none (Negotiate can do without; the others cannot). */
  credentials: Credentials | undefined;
  /** The runtime's FFI, for Negotiate's GSSAPI; absent on Node 20 (Runtime.ffi). */
  ffi?: () => Promise<Ffi>;
}

/**
 * One exchange of a scheme with the proxy. A connection-bound exchange (NTLM, Negotiate)
 * belongs to one TCP connection: when the proxy closes it, the dial loop starts a new exchange
 * on a new connection. The others (Basic, Digest) carry over to the next connection.
 */
export interface ProxyAuthExchange {
  /** The scheme's name as sent on the wire: "NTLM", "Digest", "Basic", "Negotiate". */
  readonly scheme: string;
  readonly connectionBound: boolean;
  /**
   * Requests this exchange answered with credentials the proxy judges (a Basic header, a
   * Digest response, an NTLM Type 3): what a wrong password costs the account.
   */
  readonly attempts: number;
  /** The Kerberos principal whose ticket the exchange sends (Negotiate), instead of a user name. */
  readonly principal?: string;
  /**
   * The next `Proxy-Authorization` value: for `challenge` (this scheme's challenge from the last
   * 407), or the opening one when `challenge` is undefined (a new connection). undefined when
   * there is nothing more to send: the proxy refused what was sent (wrong credentials), or,
   * for the opening call, the scheme needs a challenge first (Digest).
   * @throws {Error} when the challenge is malformed (its message says why).
   */
  respond(challenge: Challenge | undefined): string | undefined | Promise<string | undefined>;
}

/** A scheme, as the selection sees it. */
export interface ProxyAuthScheme {
  /** Lowercase, as `--proxy-auth` takes it and challenges are matched. */
  readonly name: "negotiate" | "ntlm" | "digest" | "basic";
  /**
   * A new exchange for `context`, given the challenges the proxy `offered` (all of them, or only
   * this scheme's when --proxy-auth pins it): Negotiate falls back to NTLM inside it only when
   * no NTLM challenge is among them.
   * @throws {SchemeUnavailable} when the scheme cannot be used here (no credentials, no
   *   Kerberos ticket, no GSSAPI library...): the selection moves on to the next scheme.
   */
  start(context: AuthContext, offered?: readonly Challenge[]): ProxyAuthExchange | Promise<ProxyAuthExchange>;
}

/** Why a scheme cannot be used here, with what would make it usable. */
export class SchemeUnavailable extends Error {
  override readonly name = "SchemeUnavailable";

  constructor(
    readonly scheme: string,
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}
