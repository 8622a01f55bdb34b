/**
 * What a host gives the relay's core. The core (this folder) is the relay itself, written
 * against web standards only (its tsconfig has neither workers-types nor Node's): the front
 * that routes visitors, and one TunnelCore per tunnel (or shard of one). Everything that truly
 * differs between hosts is here, passed in: on Cloudflare (../cloudflare/) a Durable Object's
 * hibernating WebSockets, storage and alarms and stubs of other objects; self-hosted
 * (../selfhost/) sockets in memory, a data directory and the other cores in the same process.
 */
import type { attachSocket, HelloFrame } from "@burrow/protocol";
import type { Admission } from "./admission.ts";
import type { RateVerdict } from "./rate.ts";
import type { RelaySettings } from "./settings.ts";

/**
 * A WebSocket the core holds: an agent's, a visitor's, or an HTTPS-transport session posing as
 * one (polling.ts). The attachment survives hibernation on Cloudflare (at most 2 KiB); the
 * self-hosted store keeps it in memory.
 */
export interface Link {
  send(message: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): unknown;
}

/** The connections of one tunnel, each accepted with tags so that finding one never walks the rest. */
export interface LinkStore {
  /**
   * Makes a WebSocket for the request being answered and accepts its server end here with
   * `tags`. Returns that end and the response that completes the upgrade (on Cloudflare a 101
   * carrying the client end; self-hosted a marker the server recognises). The host sends the
   * link's messages, closes and errors to the core's `message`, `closed` and `errored`.
   */
  upgrade(tags: readonly string[], headers?: HeadersInit): { link: Link; response: Response };
  /** The open links that carry `tag`. */
  byTag(tag: string): Link[];
}

/** A tunnel's durable state: a few small values, and one alarm that calls the core's `alarm()`. */
export interface TunnelStorage {
  get<T>(key: string): Promise<T | undefined>;
  put(key: string, value: unknown): Promise<void>;
  delete(key: string): Promise<void>;
  /** Forgets every key (and the alarm). */
  deleteAll(): Promise<void>;
  /** Calls the core's `alarm()` at `at` (ms since the epoch), replacing an earlier alarm. */
  setAlarm(at: number): Promise<void>;
}

/** Another tunnel's (or shard's) core: a Durable Object stub on Cloudflare, the core itself in one process. */
export interface TunnelPeer {
  /** A request for the tunnel: a visitor's, an agent's connect or HTTPS-transport exchange. */
  fetch(input: Request | string, init?: RequestInit): Promise<Response>;
  liveShards(): Promise<number[]>;
  shardState(shard: number, up: boolean): Promise<void>;
  evictStale(primary: string): Promise<void>;
  connectedOwner(): Promise<string | undefined>;
  admitShard(hello: HelloFrame, shard: number, name: string): Promise<ShardAdmission>;
}

/** Shard 0's answer to a shard's hello (see TunnelCore.admitShard). */
export interface ShardAdmission {
  admission: Admission;
  /** The tunnel's visitor rules, which the shard enforces. */
  rules: HelloFrame["rules"];
  /** Shard 0's session that admitted it. */
  primary?: string;
}

/** Counts across tunnels, one per key (see gate.ts): agents' connects per address, tunnels per token. */
export interface GatePeer {
  admit(limit: number): Promise<RateVerdict>;
  hold(name: string, limit: number): Promise<{ ok: true } | { ok: false; held: string[] }>;
  release(...names: string[]): Promise<void>;
}

/** The relay's settings as strings, named as the Worker's vars (readSettings reads them). */
export type SettingVars = Readonly<Record<string, string | undefined>>;

/** What every part of the core may ask of its host. */
export interface RelayHost {
  /** The vars as readSettings read them: wrangler.toml's and secrets on Cloudflare, the environment and flags self-hosted. */
  readonly settings: RelaySettings;
  /** The core of tunnel object `object` (a name, or a shard's object name: see shards.ts). */
  tunnel(object: string): TunnelPeer;
  /** The gate for `key` (a client address, or "token:<hash>"). */
  gate(key: string): GatePeer;
  /** Keeps the host alive until `work` settles (Cloudflare's waitUntil); self-hosted, logs a rejection. */
  waitUntil(work: Promise<unknown>): void;
  /** Whether `response` completes a WebSocket upgrade (one that LinkStore.upgrade made). */
  isUpgrade(response: Response): boolean;
  /** The upgrade `response` with the header fields `headers` instead of its own. */
  withUpgradeHeaders(response: Response, headers: Headers): Response;
}

/**
 * A connection to a public TCP port, as node:net gives it on Node, Bun and Deno: what a TcpPipe
 * needs, and its events (see attachSocket). The host hands it over paused.
 */
export type PublicSocket = Parameters<typeof attachSocket>[0];

/**
 * A self-hosted relay's public TCP port for one tunnel (`agent relay --tcp-ports`, frp's
 * remotePort); Cloudflare has none. The host sends each connection it accepts there to the
 * core's `acceptTcp`. A port stays its tunnel's name's while the name is kept (in --data).
 */
export interface PublicPort {
  /**
   * Listens on the name's port: the one it held, else (that one taken by another program) the
   * next free one of the range. Listening already: the same port.
   * @returns the port, or why there is none (every port of the range is taken).
   */
  open(): Promise<{ port: number } | { problem: string }>;
  /** Stops listening; the port stays the name's. Connections accepted already are the core's to end. */
  close(): void;
  /** The name lapsed (or is free again): its port may go to another name. */
  release(): void;
}

/** What one TunnelCore is given: the relay's host, and its own connections and storage. */
export interface TunnelHost extends RelayHost {
  readonly links: LinkStore;
  readonly storage: TunnelStorage;
  /**
   * A response whose body is written as it comes. With `length`, the host sends Content-Length
   * and fails the response if fewer bytes are written (a truncated body is never a clean end).
   * The bytes are sent as they are (already encoded as Content-Encoding says).
   */
  streamingResponse(
    status: number,
    headers: Headers,
    length: number | undefined,
  ): { response: Response; writable: WritableStream<Uint8Array> };
  /**
   * Runs `work` once the events already queued have run, so that frames for the agent made by
   * several of them go as one message. setTimeout(work, 0) where absent: on workerd it waits for
   * nothing more; Node holds such a timer at least a millisecond (setImmediate does not).
   */
  defer?(work: () => void): void;
  /** A response with its whole body in hand, sent as it is (already encoded as Content-Encoding says). */
  wholeResponse(status: number, headers: Headers, body: Uint8Array): Response;
  /** A self-hosted relay with --tcp-ports: this tunnel's public TCP port (see tunnel-ports.ts). */
  readonly publicPort?: PublicPort;
}
