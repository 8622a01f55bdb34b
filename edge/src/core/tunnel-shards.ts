import type { HelloFrame } from "@burrow/protocol";
import { admit, type NameRecord } from "./admission.ts";
import type { ShardAdmission, TunnelPeer } from "./host.ts";
import { shardObjectName } from "./shards.ts";
import type { TunnelCore } from "./tunnel.ts";
import { endSession } from "./tunnel-hello.ts";
import { NAME_GRACE_MS, NAME_KEY, type ReadyAttachment, RULES_KEY, SHARDS_KEY } from "./tunnel-state.ts";

export function learnShard(t: TunnelCore, url: URL): number {
  t.shard = Number(url.searchParams.get("shard") ?? 0);
  return t.shard;
}

/** The tunnel's shard 0, which holds its name (for a shard k > 0). */
export function shardZero(t: TunnelCore, name: string): TunnelPeer {
  return t.host.tunnel(name);
}

/**
 * Tells shard 0 that this shard's agent came (`up`) or left. In order: a cut and the resume
 * that follows at once must not arrive the other way round, or visitors would skip a shard
 * whose agent is here.
 */
export function reportShard(t: TunnelCore, name: string, shard: number, up: boolean): void {
  t.shardReports = t.shardReports
    .then(() => shardZero(t, name).shardState(shard, up))
    .catch((error: unknown) =>
      console.warn(`tunnel ${name}: shard ${shard} could not tell shard 0 it is ${up ? "up" : "down"}`, error),
    );
  t.host.waitUntil(t.shardReports);
}

export async function shardSet(t: TunnelCore): Promise<Set<number>> {
  t.shardsUp ??= new Set(await t.host.storage.get<number[]>(SHARDS_KEY));
  return t.shardsUp;
}

/**
 * Shard 0: the shards of this tunnel visitors may go to now (see ShardMap): 0 while its own
 * agent is here or on its way back, and every other shard whose agent is connected. Said on
 * the answers to visits that ask (SHARDS_HEADER); an RPC still for Workers of the previous
 * release, which asked before each visit, while a deploy replaces them.
 */
export async function liveShards(t: TunnelCore): Promise<number[]> {
  const live = [...(await shardSet(t))].sort((a, b) => a - b);
  if (t.agent() ?? t.current) live.unshift(0);
  return live;
}

/** Shard 0: shard `shard`'s agent connected (`up`) or left. */
export async function shardState(t: TunnelCore, shard: number, up: boolean): Promise<void> {
  const set = await shardSet(t);
  if (up === set.has(shard)) return;
  if (up) set.add(shard);
  else set.delete(shard);
  await t.host.storage.put(SHARDS_KEY, [...set]);
}

/**
 * Shard 0: may the agent of `hello` open shard `shard` of this tunnel, which its connect URL
 * named `name`? Only the agent that holds the name now (same token, or same claim on an open
 * relay), only while it does, and only for this name; the shard gets this tunnel's visitor
 * rules to enforce.
 */
export async function admitShard(t: TunnelCore, hello: HelloFrame, shard: number, name: string): Promise<ShardAdmission> {
  const none: HelloFrame["rules"] = { basicAuth: [], allowIp: [], webhooks: [], connectKeys: [] };
  const session = t.agent() ?? t.current;
  if (!session) {
    return {
      admission: {
        ok: false,
        code: "shard-waiting",
        message: `connection ${shard + 1} waits for the tunnel's first connection to be up`,
      },
      rules: none,
    };
  }
  const admission = await admit({
    hello,
    requested: name,
    tokens: await t.tokenList(),
    record: await t.host.storage.get<NameRecord>(NAME_KEY),
    liveOwner: session.owner,
    now: Date.now(),
    bootedAt: t.bootedAt,
    policy: { nameTtlMs: t.settings.nameTtlMs, graceMs: NAME_GRACE_MS, allowPunycode: t.settings.allowPunycodeNames },
  });
  if (admission.ok && admission.owner !== session.owner) {
    return {
      admission: { ok: false, code: "name-taken", message: `another agent holds the tunnel "${hello.name}"` },
      rules: none,
    };
  }
  return {
    admission,
    rules: (await t.host.storage.get<HelloFrame["rules"]>(RULES_KEY)) ?? none,
    primary: session.id,
  };
}

/**
 * Shard 0 began a new session (another owner took the name, or its agent restarted, maybe
 * with other rules or fewer connections): the shards that were up leave the live list now,
 * before the new agent's own shards report, and each is told to drop an agent admitted
 * under an earlier session. Else an old agent still holding a shard's connection (hung, or
 * cut off from shard 0 alone) would go on serving the tunnel's visitors under the old rules.
 */
export async function evictShards(t: TunnelCore, name: string, primary: string): Promise<void> {
  const set = await shardSet(t);
  if (set.size === 0) return;
  const stale = [...set];
  set.clear();
  await t.host.storage.put(SHARDS_KEY, []);
  t.host.waitUntil(
    Promise.all(
      stale.map((shard) =>
        t.host
          .tunnel(shardObjectName(name, shard))
          .evictStale(primary)
          .catch((error: unknown) => console.warn(`tunnel ${name}: shard ${shard} could not be told to drop its agent`, error)),
      ),
    ),
  );
}

/**
 * Shard k > 0: shard 0's session is `primary` now. An agent admitted under an earlier one
 * leaves with 1012 (reconnect and be judged again: admitShard admits only the name's holder,
 * under the rules of now); one admitted under this one stays.
 */
export async function evictStale(t: TunnelCore, primary: string): Promise<void> {
  const session = t.agent() ?? t.current;
  if (!session) return;
  const link = session.link;
  if (link && (t.attachment(link) as ReadyAttachment).primary === primary) return;
  if (link) t.close(link, 1012, "the tunnel's first connection began a new session");
  endSession(t, session, "The tunnel's agent was replaced by a new one; retry the request.");
}

/** The owner (a hash) of the agent connected here now, if any: asked by a token's gate count. */
export async function connectedOwner(t: TunnelCore): Promise<string | undefined> {
  return (t.agent() ?? t.current)?.owner;
}
