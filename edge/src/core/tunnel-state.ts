import type { VisitorAttachment } from "./sockets.ts";
import type { ConnectorAttachment } from "./tunnel-connect.ts";
/** What each agent socket remembers across hibernation (`serializeAttachment`, max 2 KiB). */
export type Attachment =
  | { phase: "hello"; name: string; url: string; shard?: number }
  | {
      phase: "ready";
      name: string;
      /** Which of the tunnel's objects this is (see shards.ts); absent: 0. */
      shard?: number;
      url: string;
      owner: string;
      label: string;
      session: string;
      /** The session's counts when it was last quiescent (see FrameSession.snapshot). */
      counts?: { sent: number; received: number };
      /** A shard k > 0: the session of shard 0 it was admitted under (see evictStale). */
      primary?: string;
      /** The agent serves a TCP tunnel (its hello's `tcp`). */
      tcp?: boolean;
    }
  | VisitorAttachment
  | ConnectorAttachment;
export type HelloAttachment = Extract<Attachment, { phase: "hello" }>;
export type ReadyAttachment = Extract<Attachment, { phase: "ready" }>;

/** On an open relay, a name stays reserved this long for an agent that dropped uncleanly. */
export const NAME_GRACE_MS = 60_000;
/**
 * A visitor who arrives while the agent reconnects (a proxy cut its connection, say) waits
 * this long for it instead of getting an error: agents retry within a second after a drop.
 */
export const AGENT_RETURN_WAIT_MS = 10_000;
/** While an agent is connected its name's last use is refreshed this often (an alarm). */
export const REFRESH_MS = 86_400_000;
export const AGENT_TAG = "agent";
/** A session's counts are written this long after it went quiet (see use). */
export const PERSIST_MS = 1000;

/** Storage keys: the name's owner (a hash) and the visitor rules of its connected agent. */
export const NAME_KEY = "name";
export const RULES_KEY = "rules";
/** Shard 0: the shards whose agent is connected (see shardState). */
export const SHARDS_KEY = "shards";

/**
 * One tunnel (or one shard of it: see shards.ts): holds its agent's connection and turns each
 * visitor request into a stream of frames on it. Who may connect and who owns the name is
 * decided in admission.ts, who may visit in rules.ts, with the limits of settings.ts; this
 * class puts them together on what its host gives it (see host.ts): a Durable Object's
 * hibernating sockets, storage and alarms on Cloudflare, memory and a data directory self-hosted.
 */
