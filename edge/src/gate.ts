import { DurableObject } from "cloudflare:workers";
import type { Env } from "./env.ts";
import { type Admission, SlidingWindow } from "./rate.ts";

/** Default for the var CONNECTS_PER_MINUTE. */
export const DEFAULT_CONNECTS_PER_MINUTE = 60;

/**
 * Counts agents' connection attempts (WebSocket connects and HTTPS sessions) from one client
 * address: one object per address (`idFromName(ip)`), since Workers isolates share no memory
 * across machines or even requests. The window lives in memory only: an object evicted after
 * a quiet spell (some seconds without requests) forgets it, which is what a quiet spell earns.
 */
export class GateObject extends DurableObject<Env> {
  private readonly window = new SlidingWindow(60_000);

  /** One attempt now; `limit` comes from the Worker's vars. */
  admit(limit: number): Admission {
    return this.window.attempt(Date.now(), limit);
  }
}

/** The limit from the var CONNECTS_PER_MINUTE (a positive integer), else the default. */
export function connectLimit(setting: string | undefined): number {
  const value = Number(setting);
  return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_CONNECTS_PER_MINUTE;
}
