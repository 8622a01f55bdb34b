import type { GateObject } from "./gate.ts";
import type { TunnelObject } from "./tunnel.ts";

/** Bindings and vars from wrangler.toml (and secrets set with `wrangler secret put`). */
export interface Env {
  TUNNELS: DurableObjectNamespace<TunnelObject>;
  /** One GateObject per client address: counts agents' connection attempts. */
  GATES: DurableObjectNamespace<GateObject>;
  /** Tunnels are served at `<name>.<BASE_DOMAIN>`; "localhost" locally. Empty: path URLs only. */
  BASE_DOMAIN: string;
  /** Secret: "label:token,label:token", one token per person or machine (see admission.ts). */
  BURROW_TOKENS?: string;
  /** Secret: one token, the simple form of BURROW_TOKENS (labelled "default"). */
  BURROW_TOKEN?: string;
  /** How long a visitor waits for the origin's response head before a 504 (default 600). */
  RESPONSE_TIMEOUT_SECONDS?: string;
  /** The limits of limits.ts; each has a default. */
  MAX_STREAMS_PER_TUNNEL?: string;
  HELLO_TIMEOUT_SECONDS?: string;
  MAX_AGENT_FRAMES_PER_SECOND?: string;
  MAX_AGENT_BYTES_PER_SECOND?: string;
  MAX_SIGNED_BODY_BYTES?: string;
  NAME_TTL_DAYS?: string;
  MAX_WAITING_WS_BYTES?: string;
  MAX_STREAMS_PER_VISITOR?: string;
  MAX_SIGNED_BODIES?: string;
  SIGNED_BODY_SECONDS?: string;
  MIN_SIGNED_BODY_BYTES_PER_SECOND?: string;
  /** Seconds a session whose connection was cut waits for its agent (default 30). */
  RESUME_SECONDS?: string;
  /** Tunnels one token may hold open at once (default 10). */
  TUNNELS_PER_TOKEN?: string;
  /** Agents' connects and HTTPS sessions per client address per minute (default 60). */
  CONNECTS_PER_MINUTE?: string;
  /** Largest visitor request head (request line and fields), in bytes (default 65536). */
  MAX_REQUEST_HEAD_BYTES?: string;
  /** "true" admits tunnel names starting with `xn--` (punycode look-alikes); refused by default. */
  ALLOW_PUNYCODE_NAMES?: string;
}
