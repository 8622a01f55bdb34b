// The relay's settings: one reader of the vars (wrangler.toml's [vars] and secrets on Cloudflare,
// the environment and flags self-hosted), one rule for a bad value. Each has a default; a value
// that is set but is not what its var takes (a negative count, "x" seconds) is a problem, named
// with its default: the Worker logs it and goes on with the default (it cannot refuse to start),
// the self-hosted relay refuses to start with it.
import { DEFAULT_NAME_TTL_DAYS } from "@burrow/protocol";
import type { SettingVars } from "./host.ts";
import { type RelayLimits, VISITOR_MESSAGES_BUDGET } from "./limits.ts";
import { DEFAULT_MAX_HEAD_BYTES, MAX_HEAD_BYTES_CEILING } from "./visitor.ts";

/** Everything the relay reads from its vars, read once. */
export interface RelaySettings extends RelayLimits {
  /** Tunnels are served at `<name>.<baseDomain>` (lowercase); "": by path only (`/t/<name>/`). */
  baseDomain: string;
  /** BURROW_TOKENS ("label:token,..."), parsed by admission.ts. */
  tokens: string | undefined;
  /** BURROW_TOKEN, the single-token form. */
  token: string | undefined;
  /** No token is configured: anyone who reaches the relay may open tunnels. */
  open: boolean;
  /** A visitor waits this long for the origin's response head, then 504 agent-timeout. */
  responseTimeoutMs: number;
  /** A session whose connection was cut waits this long for its agent. */
  resumeMs: number;
  /** Tunnels one token may hold open at once. */
  tunnelsPerToken: number;
  /** Agents' connects and HTTPS sessions per client address per minute. */
  connectsPerMinute: number;
  /** Largest visitor request head (request line and fields), in bytes, capped to fit a frame. */
  maxRequestHeadBytes: number;
}

/**
 * Defaults: 100 streams (a Durable Object has 128 MB; a stalled stream holds up to its 1 MiB
 * window), 10 s for the hello, 100,000 frames and 1 GiB per second (far above what one Durable
 * Object can carry, so only a runaway agent meets them), 25 MiB signed bodies (GitHub's
 * largest webhook payload), names kept 7 days.
 *
 * A visitor's share: a quarter of the tunnel's streams, and never fewer than 6 (a browser opens
 * up to 6 connections to one host over HTTP/1.1), so that it takes four addresses (four IPv6
 * /64s) to fill a tunnel, while an office behind one NAT address still has 25 of the default
 * 100. The same share of the signed bodies in check, which are as many as the streams.
 * Signed bodies must arrive within 30 s (GitHub gives a whole delivery 10 s, Shopify 5 s) and,
 * after SIGNED_BODY_GRACE_MS, at 16 KiB/s or more (a webhook sender is a server in a data
 * centre): a visitor who trickles one holds its place a few seconds, or pays for it in bandwidth.
 *
 * RESUME_SECONDS, 30: an agent notices a cut that came with a FIN or RST at once and is back
 * within a second or two (its first retries are 250 ms to 1 s apart; a proxy and TLS add a few
 * round trips), and within about 10 s when its WebSocket keeps dying and it moves to the HTTPS
 * transport; while waiting, a download's visitor sees a pause well inside browsers' and
 * Cloudflare's idle limits (100 s), and what is kept meanwhile is bounded by the streams' windows.
 */
export function readSettings(vars: SettingVars): { settings: RelaySettings; problems: string[] } {
  const problems: string[] = [];
  /** A positive number (`whole`: an integer) from `name`, else `fallback` (and a problem if it was set). */
  const number = (name: string, fallback: number, whole = true): number => {
    const raw = vars[name]?.trim();
    if (raw === undefined || raw === "") return fallback;
    const value = Number(raw);
    if (Number.isFinite(value) && value > 0 && (!whole || Number.isSafeInteger(value))) return value;
    const kind = whole ? "a whole number above 0" : "a number above 0";
    problems.push(`${name}=${JSON.stringify(raw)} is not ${kind}; using the default, ${fallback}`);
    return fallback;
  };
  const maxStreams = number("MAX_STREAMS_PER_TUNNEL", 100);
  const maxSignedBodies = number("MAX_SIGNED_BODIES", maxStreams);
  const perVisitor = (limit: number) => Math.min(limit, number("MAX_STREAMS_PER_VISITOR", visitorShare(limit)));
  const tokens = vars.BURROW_TOKENS?.trim() || undefined;
  const token = vars.BURROW_TOKEN?.trim() || undefined;
  const punycode = vars.ALLOW_PUNYCODE_NAMES?.trim().toLowerCase() ?? "";
  if (!["", "true", "1", "yes", "false", "0", "no"].includes(punycode)) {
    problems.push(`ALLOW_PUNYCODE_NAMES=${JSON.stringify(punycode)} is not true or false; punycode names stay refused`);
  }
  const settings: RelaySettings = {
    baseDomain: vars.BASE_DOMAIN?.trim().toLowerCase() ?? "",
    tokens,
    token,
    open: !tokens && !token,
    maxStreams,
    helloTimeoutMs: 1000 * number("HELLO_TIMEOUT_SECONDS", 10, false),
    maxFramesPerSecond: number("MAX_AGENT_FRAMES_PER_SECOND", 100_000),
    maxBytesPerSecond: number("MAX_AGENT_BYTES_PER_SECOND", 1024 ** 3),
    maxSignedBody: number("MAX_SIGNED_BODY_BYTES", 25 * 1024 * 1024),
    nameTtlMs: 86_400_000 * number("NAME_TTL_DAYS", DEFAULT_NAME_TTL_DAYS, false),
    maxWaitingMessages: number("MAX_WAITING_WS_BYTES", VISITOR_MESSAGES_BUDGET),
    allowPunycodeNames: ["true", "1", "yes"].includes(punycode),
    maxStreamsPerVisitor: perVisitor(maxStreams),
    maxSignedBodies,
    maxSignedBodiesPerVisitor: Math.min(maxSignedBodies, perVisitor(maxSignedBodies)),
    signedBodyTimeoutMs: 1000 * number("SIGNED_BODY_SECONDS", 30, false),
    minSignedBodyRate: number("MIN_SIGNED_BODY_BYTES_PER_SECOND", 16 * 1024),
    responseTimeoutMs: 1000 * number("RESPONSE_TIMEOUT_SECONDS", 600, false),
    resumeMs: 1000 * number("RESUME_SECONDS", 30, false),
    tunnelsPerToken: number("TUNNELS_PER_TOKEN", 10),
    connectsPerMinute: number("CONNECTS_PER_MINUTE", 60),
    maxRequestHeadBytes: Math.min(number("MAX_REQUEST_HEAD_BYTES", DEFAULT_MAX_HEAD_BYTES), MAX_HEAD_BYTES_CEILING),
  };
  // MAX_STREAMS_PER_VISITOR is read twice (streams, signed bodies): say a bad value once.
  return { settings, problems: [...new Set(problems)] };
}

/** The default share of one visitor: a quarter of `limit`, at least 6, at most `limit`. */
function visitorShare(limit: number): number {
  return Math.min(limit, Math.max(6, Math.ceil(limit / 4)));
}
