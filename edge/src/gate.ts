import { DurableObject } from "cloudflare:workers";
import type { Env } from "./env.ts";
import { type Admission, SlidingWindow } from "./rate.ts";

/** Default for the var CONNECTS_PER_MINUTE. */
export const DEFAULT_CONNECTS_PER_MINUTE = 60;

/** Default for the var TUNNELS_PER_TOKEN. */
export const DEFAULT_TUNNELS_PER_TOKEN = 10;

/**
 * Counts what must be counted across tunnels, one object per key: agents' connection attempts
 * (WebSocket connects and HTTPS sessions) from one client address (`idFromName(ip)`), and the
 * tunnels one token holds open (`idFromName("owner:" + the token's hash)`). Workers isolates
 * share no memory across machines or even requests. The attempt window lives in memory only:
 * an object evicted after a quiet spell (some seconds without requests) forgets it, which is
 * what a quiet spell earns; the tunnels a token holds are kept in storage.
 */
export class GateObject extends DurableObject<Env> {
  private readonly window = new SlidingWindow(60_000);

  /** One attempt now; `limit` comes from the Worker's vars. */
  admit(limit: number): Admission {
    return this.window.attempt(Date.now(), limit);
  }

  /**
   * The token's agent opens tunnel `name`: admitted while the token holds fewer than `limit`
   * others. When it does not, the names it holds come back, for the caller to check which are
   * still connected (a tunnel whose relay restarted never said it let go) and `forget` the rest.
   */
  async hold(name: string, limit: number): Promise<{ ok: true } | { ok: false; held: string[] }> {
    const held = (await this.ctx.storage.get<string[]>("tunnels")) ?? [];
    if (held.includes(name)) return { ok: true };
    if (held.length >= limit) return { ok: false, held };
    await this.ctx.storage.put("tunnels", [...held, name]);
    return { ok: true };
  }

  /** The token's tunnel `name` (or each of `names`) is no longer open. */
  async release(...names: string[]): Promise<void> {
    const held = (await this.ctx.storage.get<string[]>("tunnels")) ?? [];
    await this.ctx.storage.put(
      "tunnels",
      held.filter((n) => !names.includes(n)),
    );
  }
}

/** The limit from the var TUNNELS_PER_TOKEN (a positive integer), else the default. */
export function tunnelLimit(setting: string | undefined): number {
  const value = Number(setting);
  return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_TUNNELS_PER_TOKEN;
}

/** The limit from the var CONNECTS_PER_MINUTE (a positive integer), else the default. */
export function connectLimit(setting: string | undefined): number {
  const value = Number(setting);
  return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_CONNECTS_PER_MINUTE;
}
