// The relay's host on Cloudflare: its vars, its Durable Objects as the tunnels and gates the core
// reaches, and the upgrade responses workerd makes (a 101 carrying the client end of a
// WebSocketPair). One per isolate and Env; what it caches lives as long as the isolate.
import type { GatePeer, RelayHost, SettingVars, TunnelPeer } from "../core/host.ts";
import { readSettings } from "../core/settings.ts";
import type { Env } from "./env.ts";

const hosts = new WeakMap<Env, RelayHost>();

/** The RelayHost of `env`, made once per isolate (the vars are read, and bad ones logged, once). */
export function relayHost(env: Env): RelayHost {
  let host = hosts.get(env);
  if (!host) {
    host = cloudflareHost(env);
    hosts.set(env, host);
  }
  return host;
}

function cloudflareHost(env: Env): RelayHost {
  const { settings, problems } = readSettings(env as unknown as SettingVars);
  for (const problem of problems) console.warn(`relay setting: ${problem}`);
  /** Tunnels' object ids by object name, as the runtime hashes them (idFromName is a SHA-256 each time). */
  const tunnelIds = new Map<string, DurableObjectId>();
  return {
    settings,
    tunnel(object: string): TunnelPeer {
      let id = tunnelIds.get(object);
      if (!id) {
        if (tunnelIds.size >= 1000) tunnelIds.clear();
        id = env.TUNNELS.idFromName(object);
        tunnelIds.set(object, id);
      }
      return env.TUNNELS.get(id) as unknown as TunnelPeer;
    },
    gate(key: string): GatePeer {
      return env.GATES.get(env.GATES.idFromName(key)) as unknown as GatePeer;
    },
    // The front awaits all it starts; a Durable Object passes its own (see TunnelObject).
    waitUntil: (work) => void work.catch((error: unknown) => console.error("relay: background work failed", error)),
    isUpgrade: (response) => response.webSocket !== null && response.webSocket !== undefined,
    withUpgradeHeaders: (response, headers) => new Response(null, { status: 101, webSocket: response.webSocket, headers }),
  };
}
