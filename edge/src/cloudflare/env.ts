import type { GateObject } from "./gate-object.ts";
import type { TunnelObject } from "./tunnel-object.ts";

/**
 * Bindings and vars from wrangler.toml (and secrets set with `wrangler secret put`). The vars
 * (BASE_DOMAIN, BURROW_TOKENS, the limits...) are read by the core's readSettings, which names
 * each one (edge/src/core/settings.ts); docs/security.md lists them.
 */
export interface Env {
  TUNNELS: DurableObjectNamespace<TunnelObject>;
  /** One GateObject per client address and per token: see GateCore. */
  GATES: DurableObjectNamespace<GateObject>;
  [variable: string]: unknown;
}
