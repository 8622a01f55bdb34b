// The relay's limits on what agents and visitors may make it do, each with a default and the
// variable that changes it (wrangler.toml [vars], `--var`, or the dashboard). Runtime-free.

/** Limits in force for one tunnel (read by settings.ts). */
export interface RelayLimits {
  /** Requests and visitor WebSockets open at once on one tunnel; more get 503 with Retry-After. */
  maxStreams: number;
  /** A connection that has not said hello by then is closed (4004). */
  helloTimeoutMs: number;
  /** Frames per second an agent may send, averaged over two seconds; more closes it (4005). */
  maxFramesPerSecond: number;
  /** Bytes per second an agent may send, averaged over two seconds; more closes it (4005). */
  maxBytesPerSecond: number;
  /** Largest body of a request whose signature the relay checks (it reads it whole first). */
  maxSignedBody: number;
  /** A name goes unused this long before another token may take it. */
  nameTtlMs: number;
  /** Visitors' WebSocket messages held at once per tunnel while the origin is slow to take them. */
  maxWaitingMessages: number;
  /** Punycode (`xn--`) tunnel names are admitted (ALLOW_PUNYCODE_NAMES; see PUNYCODE_PREFIX). */
  allowPunycodeNames: boolean;
  /** Streams one visitor (see visitorKey) may hold at once on a tunnel; more get 503 too-many-from-address. */
  maxStreamsPerVisitor: number;
  /** The same for the bodies in check (a share of maxSignedBodies). */
  maxSignedBodiesPerVisitor: number;
  /**
   * Bodies read whole before their signature is checked, at once per tunnel: a pool of their
   * own, so that unverified requests never take the stream slots verified ones need.
   */
  maxSignedBodies: number;
  /** A body read before its check must be whole within this; later is 408 body-too-slow. */
  signedBodyTimeoutMs: number;
  /**
   * ... and must keep up this rate (bytes a second) after SIGNED_BODY_GRACE_MS: a body that has
   * been read for t ms holds its place while it has more than (t - grace) / 1000 * rate bytes.
   */
  minSignedBodyRate: number;
}

/**
 * A token bucket: `rate` units a second, with room for `burstSeconds` of them, so a burst is
 * allowed and a sustained excess is not. The clock is passed in.
 */
export class RateMeter {
  private level: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burstSeconds: number,
    now: number,
  ) {
    this.level = rate * burstSeconds;
    this.last = now;
  }

  /** Takes `amount` units; false when the bucket is empty (the caller enforces). */
  take(amount: number, now: number): boolean {
    const capacity = this.rate * this.burstSeconds;
    this.level = Math.min(capacity, this.level + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    this.level -= amount;
    return this.level >= 0;
  }
}

/**
 * Bytes a tunnel's Durable Object may hold at once for one purpose (signed bodies read whole,
 * visitors' WebSocket messages waiting for the origin), whatever the number of requests: a
 * Durable Object has 128 MB in all.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  /** Takes `bytes`; false (and nothing taken) when that would pass the limit. */
  take(bytes: number): boolean {
    if (this.used + bytes > this.limit) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }
}

/** Signed bodies held at once per tunnel while their signatures are checked. */
export const SIGNED_BODIES_BUDGET = 32 * 1024 * 1024;
/**
 * Default of MAX_WAITING_WS_BYTES: visitors' WebSocket messages held at once per tunnel while
 * the origin is slow to take them (room for one largest message and then some).
 */
export const VISITOR_MESSAGES_BUDGET = 48 * 1024 * 1024;
/**
 * A body read before its check may arrive at any rate for its first 5 s (a slow start, a
 * retransmitted first segment, a sender that writes the head before it has the body), and must
 * keep up MIN_SIGNED_BODY_BYTES_PER_SECOND after that (Apache's mod_reqtimeout works the same
 * way: a grace, then more time for each MinRate bytes).
 */
export const SIGNED_BODY_GRACE_MS = 5000;

/**
 * How long the relay waits for the agent holding a name to answer a ping, when another agent
 * with the same claim asks for the name as a new session (see TunnelObject.answers). 3 s: an
 * agent's answer is one round trip, a second at worst through a corporate proxy; a holder
 * that stays silent this long is taken for dead (a half-open connection the relay has not
 * noticed yet), so that the owner's own restart gets its name back within seconds.
 */
export const LIVENESS_PROBE_MS = 3_000;
