import type { GatePeer, TunnelStorage } from "./host.ts";
import { type RateVerdict, SlidingWindow } from "./rate.ts";

/**
 * Counts what must be counted across tunnels, one gate per key: agents' connection attempts
 * (WebSocket connects and HTTPS sessions) from one client address, and the tunnels one token
 * holds open ("token:" + the token's hash). On Cloudflare each gate is a Durable Object
 * (Workers isolates share no memory across machines or even requests); self-hosted, an object
 * in the relay's process. The attempt window lives in memory only: a gate evicted after a
 * quiet spell forgets it, which is what a quiet spell earns; the tunnels a token holds are
 * kept in storage.
 */
export class GateCore implements GatePeer {
  private readonly window = new SlidingWindow(60_000);

  constructor(
    private readonly storage: Pick<TunnelStorage, "get" | "put">,
    private readonly now: () => number = Date.now,
  ) {}

  /** One attempt now, within `limit` a minute (CONNECTS_PER_MINUTE). */
  async admit(limit: number): Promise<RateVerdict> {
    return this.window.attempt(this.now(), limit);
  }

  /**
   * The token's agent opens tunnel `name`: admitted while the token holds fewer than `limit`
   * others. When it does not, the names it holds come back, for the caller to check which are
   * still connected (a tunnel whose relay restarted never said it let go) and `release` the rest.
   */
  async hold(name: string, limit: number): Promise<{ ok: true } | { ok: false; held: string[] }> {
    const held = (await this.storage.get<string[]>("tunnels")) ?? [];
    if (held.includes(name)) return { ok: true };
    if (held.length >= limit) return { ok: false, held };
    await this.storage.put("tunnels", [...held, name]);
    return { ok: true };
  }

  /** The token's tunnel `name` (or each of `names`) is no longer open. */
  async release(...names: string[]): Promise<void> {
    const held = (await this.storage.get<string[]>("tunnels")) ?? [];
    await this.storage.put(
      "tunnels",
      held.filter((n) => !names.includes(n)),
    );
  }
}
