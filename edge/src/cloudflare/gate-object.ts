import { DurableObject } from "cloudflare:workers";
import { GateCore } from "../core/gate.ts";
import type { RateVerdict } from "../core/rate.ts";
import type { Env } from "./env.ts";

/** A gate (see GateCore) as a Durable Object: one per client address, one per token. */
export class GateObject extends DurableObject<Env> {
  private readonly core = new GateCore(this.ctx.storage);

  admit(limit: number): Promise<RateVerdict> {
    return this.core.admit(limit);
  }

  hold(name: string, limit: number): Promise<{ ok: true } | { ok: false; held: string[] }> {
    return this.core.hold(name, limit);
  }

  release(...names: string[]): Promise<void> {
    return this.core.release(...names);
  }
}
