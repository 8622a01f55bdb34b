import { MAX_CONNECTIONS } from "@burrow/protocol";
import { EdgeError } from "./errors.ts";

// One tunnel on several Durable Objects (`agent --connections N`). A Durable Object runs one
// request at a time, and Cloudflare's soft limit is about 1,000 requests a second per object;
// each connection of the agent goes to its own object of the tunnel, its shard. Shard 0 is the
// tunnel's object as ever (the name, its owner, the visitor rules, the agent-offline page);
// shard k > 0 admits an agent only if shard 0 says the agent owns the name, and enforces shard
// 0's rules. The Worker spreads visitors over the shards whose agent is connected. Runtime-free.

/** The name of shard `shard`'s object: the tunnel's own name for shard 0 ('#' is never in a name). */
export function shardObjectName(name: string, shard: number): string {
  return shard === 0 ? name : `${name}#${shard}`;
}

/**
 * The `shard` of an agent's connect URL: absent is 0.
 * @throws {EdgeError} 400 for anything but a whole number below MAX_CONNECTIONS.
 */
export function parseShard(text: string | undefined): number {
  if (text === undefined) return 0;
  const shard = Number(text);
  if (!/^\d{1,2}$/.test(text) || shard >= MAX_CONNECTIONS) {
    throw new EdgeError(
      400,
      "bad-request",
      `?shard= must be a connection number from 0 to ${MAX_CONNECTIONS - 1} (--connections is at most ${MAX_CONNECTIONS}).`,
    );
  }
  return shard;
}

/** How long the Worker trusts what it learnt of a tunnel's live shards. */
export const SHARDS_TTL_MS = 2000;

/**
 * What this isolate knows of each tunnel's live shards, learnt from shard 0 at most every
 * SHARDS_TTL_MS: a shard whose agent left stops getting new visitors within that (and a
 * visitor it still gets is handed to shard 0 unread, see TunnelObject.visit). Learning costs
 * no round trip of its own: a visit that asks goes to shard 0, which says on its answer
 * (SHARDS_HEADER). Once the list is stale, one visit asks while the others go on using it;
 * only a tunnel this isolate never saw sends every visit to shard 0 until the first answer.
 */
export class ShardMap {
  private readonly known = new Map<string, { live: number[]; until: number; askedAt?: number }>();

  constructor(private readonly capacity = 1000) {}

  /**
   * Where a visit of `name` goes now: `shard`, and whether it `asks` shard 0 for the live
   * shards (it then goes to shard 0). An answer that never came (a failed visit) is asked for
   * again after SHARDS_TTL_MS.
   */
  route(name: string, now: number, random: () => number = Math.random): { shard: number; asks: boolean } {
    const entry = this.known.get(name);
    if (!entry) return { shard: 0, asks: true };
    if (entry.until <= now && (entry.askedAt === undefined || entry.askedAt + SHARDS_TTL_MS <= now)) {
      entry.askedAt = now;
      return { shard: 0, asks: true };
    }
    return { shard: pickShard(entry.live, random), asks: false };
  }

  /** Shard 0 said that `name`'s live shards are `live`. */
  set(name: string, live: number[], now: number): void {
    if (this.known.size >= this.capacity && !this.known.has(name)) this.known.clear();
    this.known.set(name, { live, until: now + SHARDS_TTL_MS });
  }
}

/** The shard a visitor goes to: one of the live ones at random, else 0 (which knows what to say). */
export function pickShard(live: readonly number[], random: () => number = Math.random): number {
  if (live.length <= 1) return live[0] ?? 0;
  return live[Math.floor(random() * live.length)] ?? 0;
}

/** SHARDS_HEADER's value ("0,2,3"), or undefined when absent or not a list of shard numbers. */
export function parseLiveShards(text: string | null): number[] | undefined {
  if (text === null) return undefined;
  if (text === "") return [];
  const live: number[] = [];
  for (const part of text.split(",")) {
    if (!/^\d{1,2}$/.test(part) || Number(part) >= MAX_CONNECTIONS) return undefined;
    live.push(Number(part));
  }
  return live;
}
