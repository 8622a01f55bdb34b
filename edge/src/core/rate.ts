/** The outcome of one attempt: admitted, or refused with the seconds until one would be. */
export type RateVerdict = { ok: true } | { ok: false; retryAfterSeconds: number };

/**
 * At most `limit` attempts in any `windowMs` (a sliding log: the times of the admitted
 * attempts, oldest first). Runtime-free, with the clock passed in, so that it can be tested
 * without workerd; GateObject holds one per client address.
 */
export class SlidingWindow {
  private readonly times: number[] = [];

  constructor(private readonly windowMs = 60_000) {}

  /** Records an attempt at `now` (ms) if fewer than `limit` were admitted in the window before it. */
  attempt(now: number, limit: number): RateVerdict {
    while (this.times.length > 0 && this.times[0]! <= now - this.windowMs) this.times.shift();
    // A lowered limit leaves more times than it allows: only the newest `limit` matter.
    if (this.times.length > limit) this.times.splice(0, this.times.length - limit);
    if (this.times.length < limit) {
      this.times.push(now);
      return { ok: true };
    }
    const frees = this.times[0]! + this.windowMs;
    return { ok: false, retryAfterSeconds: Math.max(1, Math.ceil((frees - now) / 1000)) };
  }
}
