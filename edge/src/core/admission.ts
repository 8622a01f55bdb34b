import {
  type HelloFrame,
  isPunycodeName,
  PROTOCOL_VERSION,
  PUNYCODE_PREFIX,
  RESERVED_NAMES,
  type RefusalCode,
  sameBytes,
  TUNNEL_NAME_PATTERN,
} from "@burrow/protocol";

// Who may open a tunnel and who owns a name. Runtime-free: the Durable Object passes in its
// storage, its clock and the state of its links; nothing here imports cloudflare:workers.

/** One configured token: its label (for logs and messages) and the SHA-256 of the token. */
export interface TokenEntry {
  label: string;
  hash: Uint8Array;
}

/** The relay's tokens, from the BURROW_TOKENS and BURROW_TOKEN secrets. Empty: an open relay. */
export interface Tokens {
  entries: TokenEntry[];
  /** Set when the secrets are malformed: every agent is refused with this (fail closed). */
  error?: string;
}

const LABEL = /^[A-Za-z0-9_.@-]{1,64}$/;

/**
 * Reads `BURROW_TOKENS` ("label:token,label:token", for one token per person or machine) and
 * `BURROW_TOKEN` (one token, labelled "default"). Only the tokens' hashes are kept.
 */
export async function parseTokens(list: string | undefined, single: string | undefined): Promise<Tokens> {
  const pairs: [string, string][] = [];
  for (const item of (list ?? "").split(",")) {
    const text = item.trim();
    if (!text) continue;
    const colon = text.indexOf(":");
    const label = text.slice(0, colon).trim();
    const token = text.slice(colon + 1).trim();
    if (colon < 1 || !LABEL.test(label) || token.length < 8) {
      return {
        entries: [],
        error: `BURROW_TOKENS entry ${pairs.length + 1} is not "label:token" (a label of letters, digits, _.@-, and a token of 8 or more characters)`,
      };
    }
    if (pairs.some(([other]) => other === label)) {
      return { entries: [], error: `BURROW_TOKENS names the label "${label}" twice` };
    }
    pairs.push([label, token]);
  }
  if (single?.trim()) pairs.push(["default", single.trim()]);
  const entries = await Promise.all(pairs.map(async ([label, token]) => ({ label, hash: await sha256(token) })));
  return { entries };
}

/**
 * The entry whose token is `token`, compared in constant time against every entry (no early
 * exit, and digests of fixed length, so neither the position nor the length leaks).
 */
export async function identify(tokens: Tokens, token: string): Promise<TokenEntry | undefined> {
  if (!token) return undefined;
  const given = await sha256(token);
  let found: TokenEntry | undefined;
  for (const entry of tokens.entries) {
    if (sameBytes(given, entry.hash) && !found) found = entry;
  }
  return found;
}

/**
 * What the relay stores per tunnel name (Durable Object storage, key "name"): who owns it, as a
 * hash, never a token or a claim. `owner` is "token:<sha256 of the token>" on a relay with
 * tokens, "claim:<sha256 of the agent's claim>" on an open one.
 */
export interface NameRecord {
  owner: string;
  /** The token's label, or "open". */
  label: string;
  /** Last time an agent of the owner was connected (refreshed daily while it is). */
  lastUsed: number;
  /** An agent of the owner was connected when this was written. */
  connected: boolean;
}

export interface AdmissionPolicy {
  /** Unused names return to the pool after this long (NAME_TTL_DAYS). */
  nameTtlMs: number;
  /** On an open relay, a name stays reserved this long for an agent that dropped uncleanly. */
  graceMs: number;
  /** Punycode (`xn--`) names are admitted (ALLOW_PUNYCODE_NAMES). */
  allowPunycode?: boolean;
}

export interface HelloContext {
  hello: HelloFrame;
  /** The name in the connect URL, which the hello must repeat. */
  requested: string;
  tokens: Tokens;
  record: NameRecord | undefined;
  /** The owner key of the ready link this relay holds for the name now, if any. */
  liveOwner: string | undefined;
  now: number;
  /** When this Durable Object instance started: a connected record without a live link is from before. */
  bootedAt: number;
  policy: AdmissionPolicy;
}

export type Admission =
  | { ok: true; owner: string; label: string; replaces: boolean }
  | { ok: false; code: RefusalCode; message: string };

/** Decides a hello. Pure but for hashing: the caller stores the record and closes links. */
export async function admit(context: HelloContext): Promise<Admission> {
  const { hello, tokens, record, liveOwner, now, policy } = context;
  const refuse = (code: RefusalCode, message: string): Admission => ({ ok: false, code, message });
  if (hello.version < PROTOCOL_VERSION) {
    return refuse(
      "version-mismatch",
      `this relay speaks protocol ${PROTOCOL_VERSION} and the agent speaks ${hello.version}: upgrade the agent`,
    );
  }
  if (hello.version > PROTOCOL_VERSION) {
    return refuse(
      "version-mismatch",
      `this relay speaks protocol ${PROTOCOL_VERSION} and the agent speaks ${hello.version}: redeploy the relay with a newer Burrow (npm run deploy), or use an older agent`,
    );
  }
  if (tokens.error) return refuse("unauthorized", `the relay is misconfigured (${tokens.error}); tell its owner`);
  let owner: string;
  let label: string;
  if (tokens.entries.length > 0) {
    const entry = await identify(tokens, hello.token);
    if (!entry) {
      return refuse(
        "unauthorized",
        hello.token
          ? "the token is not one this relay was given: check --token, --token-file or BURROW_TOKEN"
          : "this relay requires a token: pass --token-file, --token or BURROW_TOKEN",
      );
    }
    owner = `token:${toBase64(entry.hash)}`;
    label = entry.label;
  } else {
    if (hello.claim.length < 16) return refuse("bad-hello", "the hello's claim is too short to prove anything");
    owner = `claim:${toBase64(await sha256(hello.claim))}`;
    label = "open";
  }
  if (hello.name !== context.requested || !TUNNEL_NAME_PATTERN.test(hello.name)) {
    return refuse(
      "bad-hello",
      `the hello asks for tunnel ${JSON.stringify(hello.name)} but the connection was opened for ${JSON.stringify(context.requested)}`,
    );
  }
  if (RESERVED_NAMES.has(hello.name)) {
    return refuse("name-reserved", `the name "${hello.name}" is reserved by the relay (see the README's Security section)`);
  }
  if (!policy.allowPunycode && isPunycodeName(hello.name)) {
    return refuse(
      "name-reserved",
      `the name "${hello.name}" starts with ${PUNYCODE_PREFIX}: browsers show such (punycode) names as other letters, look-alikes of other names, so this relay refuses them (its owner can allow them with ALLOW_PUNYCODE_NAMES)`,
    );
  }
  const byToken = owner.startsWith("token:");
  const taken = byToken
    ? `the name "${hello.name}" belongs to another token`
    : `the tunnel name "${hello.name}" is in use by another agent`;
  if (liveOwner !== undefined) {
    if (liveOwner === owner) return { ok: true, owner, label, replaces: true };
    return refuse(byToken ? "name-owned" : "name-taken", byToken ? taken : `${taken}: choose another --name`);
  }
  if (record && record.owner !== owner) {
    if (byToken && record.owner.startsWith("token:")) {
      // A token's name is its own until it has gone unused for the TTL. A record still marked
      // connected with no live link is from before this instance started: used until then.
      const lastUsed = record.connected ? Math.max(record.lastUsed, context.bootedAt) : record.lastUsed;
      if (now < lastUsed + policy.nameTtlMs) return refuse("name-owned", taken);
    } else if (!byToken) {
      // Open relay: the name waits for its agent for the grace after an unclean drop. A record
      // still marked connected without a live link is from before this instance started (a
      // relay restart, an eviction): the grace counts from the restart.
      const until = (record.connected ? context.bootedAt : record.lastUsed) + policy.graceMs;
      if (now < until) {
        return refuse(
          "name-taken",
          `${taken} (it is kept for its agent for ${Math.ceil((until - now) / 1000)}s more): choose another --name`,
        );
      }
    }
    // A relay that changed between open and tokens: the first owner of the new kind takes it.
  }
  return { ok: true, owner, label, replaces: false };
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

function toBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}
