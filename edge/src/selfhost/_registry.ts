import { setImmediate } from "node:timers";
import { GateCore } from "../core/gate.ts";
import type { GatePeer, PublicSocket, RelayHost, TunnelHost, TunnelPeer } from "../core/host.ts";
import type { RelaySettings } from "../core/settings.ts";
import { TunnelCore } from "../core/tunnel.ts";
import { AGENT_TAG } from "../core/tunnel-state.ts";
import { MemoryLinks, Upgrades } from "./_links.ts";
import type { PortPool } from "./_ports.ts";
import type { DataDir } from "./_storage.ts";
import { ObjectStorage } from "./_storage.ts";
import { streamingResponse, wholeResponse } from "./_streaming.ts";
import { UPGRADE_HEADER } from "./server.ts";

/** A tunnel that has been idle this long (no links, no alarm, no request, no agent session) is dropped. */
const IDLE_MS = 60_000;
const SWEEP_MS = 30_000;
/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days): a later alarm is armed in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface TunnelEntry {
  core: TunnelCore;
  links: MemoryLinks;
  storage: ObjectStorage;
  /** The core's start(): every call waits for it. */
  started: Promise<void>;
  /** Calls into the core not yet returned. */
  busy: number;
  lastUsed: number;
}

interface GateEntry {
  core: GateCore;
  storage: ObjectStorage;
  lastUsed: number;
}

/**
 * Every tunnel of one self-hosted relay, in this process: the Durable Object namespace's
 * counterpart. A tunnel's core is made when something first asks for it (a visitor, its agent,
 * another shard, its alarm), `start()`ed before any call reaches it, and dropped once idle; what
 * it stored stays in the data directory (or in memory, without one) for the next.
 */
export class Registry {
  readonly upgrades = new Upgrades();
  readonly host: RelayHost;
  private readonly tunnels = new Map<string, TunnelEntry>();
  private readonly gates = new Map<string, GateEntry>();
  /** Without a data directory, the storage of tunnels and gates that were dropped while holding something. */
  private readonly kept = new Map<string, ObjectStorage>();
  private readonly alarms = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly sweeper: ReturnType<typeof setInterval>;
  private stopping = false;

  constructor(
    readonly settings: RelaySettings,
    private readonly data: DataDir | undefined,
    /** --tcp-ports: TCP tunnels' public ports. */
    private readonly ports?: PortPool,
  ) {
    this.host = {
      settings,
      tunnel: (object) => this.peer(object),
      gate: (key) => this.gate(key),
      waitUntil: (work) => this.waitUntil(work),
      isUpgrade: (response) => response.headers.has(UPGRADE_HEADER),
      // The marker stays: it names the link waiting for the server's socket.
      withUpgradeHeaders(response, headers) {
        const copy = new Response(null, { status: response.status, headers });
        copy.headers.set(UPGRADE_HEADER, response.headers.get(UPGRADE_HEADER) ?? "");
        return copy;
      },
    };
    // Alarms outlive the process: a name's lease and TTL fire after a restart too.
    for (const { object, at } of data?.alarms() ?? []) this.arm(object, at);
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_MS);
  }

  /** The tunnel object `object` as its peers see it: each call waits for the core's start(). */
  peer(object: string): TunnelPeer {
    return {
      fetch: (input, init) => this.use(object, (core) => core.fetch(input, init)),
      liveShards: () => this.use(object, (core) => core.liveShards()),
      shardState: (shard, up) => this.use(object, (core) => core.shardState(shard, up)),
      evictStale: (primary) => this.use(object, (core) => core.evictStale(primary)),
      connectedOwner: () => this.use(object, (core) => core.connectedOwner()),
      admitShard: (hello, shard, name) => this.use(object, (core) => core.admitShard(hello, shard, name)),
    };
  }

  gate(key: string): GatePeer {
    let entry = this.gates.get(key);
    if (!entry) {
      const storage = this.kept.get(`gate:${key}`) ?? new ObjectStorage(this.data?.file("gates", key), () => {});
      this.kept.delete(`gate:${key}`);
      entry = { core: new GateCore(storage), storage, lastUsed: Date.now() };
      this.gates.set(key, entry);
    }
    entry.lastUsed = Date.now();
    return entry.core;
  }

  waitUntil(work: Promise<unknown>): void {
    const tracked = work.catch((error: unknown) => console.error("relay | background work failed", error));
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  /** A connection to tunnel `name`'s public port, paused: its core judges it (see TunnelCore.acceptTcp). */
  acceptTcp(name: string, socket: PublicSocket, from: string): void {
    this.use(name, (core) => core.acceptTcp(socket, from)).catch((error: unknown) => {
      socket.destroy();
      console.error(`relay | tunnel ${name}: a connection to its public port failed`, error);
    });
  }

  /** Tells every tunnel's agents, on either transport, `code` and `reason` (a graceful stop). */
  closeAgents(code: number, reason: string): void {
    for (const entry of this.tunnels.values()) entry.core.closeAgents(code, reason);
  }

  /** Agent links not yet gone, in every tunnel (HTTPS-transport ones too). */
  agentLinkCount(): number {
    let count = 0;
    for (const entry of this.tunnels.values()) count += entry.core.agentLinkCount();
    return count;
  }

  /** Links of every tunnel, for a graceful stop. */
  *links(): Generator<{ agent: boolean; link: import("./_links.ts").MemoryLink }> {
    for (const entry of this.tunnels.values()) {
      for (const link of entry.links.links()) yield { agent: link.tags.includes(AGENT_TAG), link };
    }
  }

  /** Stops the timers and writes what is left to write. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.sweeper);
    for (const timer of this.alarms.values()) clearTimeout(timer);
    this.alarms.clear();
    // Storage is in its files already (each change is written as it is made).
    await Promise.race([Promise.all(this.background), new Promise((resolve) => setTimeout(resolve, 500))]);
  }

  private async use<T>(object: string, call: (core: TunnelCore) => Promise<T>): Promise<T> {
    const entry = this.entry(object);
    entry.busy++;
    try {
      await entry.started;
      return await call(entry.core);
    } finally {
      entry.busy--;
      entry.lastUsed = Date.now();
    }
  }

  private entry(object: string): TunnelEntry {
    const existing = this.tunnels.get(object);
    if (existing) return existing;
    const storage = this.kept.get(object) ?? new ObjectStorage(this.data?.file("tunnels", object), (at) => this.arm(object, at));
    this.kept.delete(object);
    const links = new MemoryLinks(this.upgrades, object, () => {
      const entry = this.tunnels.get(object);
      if (entry) entry.lastUsed = Date.now();
    });
    // setImmediate: after the I/O events already queued, as a Durable Object's zero timer is;
    // Node's setTimeout(0) waits a millisecond, on every request's way to the agent.
    const host: TunnelHost = {
      ...this.host,
      links,
      storage,
      streamingResponse,
      wholeResponse,
      defer: (work) => void setImmediate(work),
      publicPort: this.ports?.forTunnel(object),
    };
    const core = new TunnelCore(host);
    links.target = core;
    const started = core.start().catch((error: unknown) => console.error(`relay | tunnel ${object}: start failed`, error));
    const entry: TunnelEntry = { core, links, storage, started, busy: 0, lastUsed: Date.now() };
    this.tunnels.set(object, entry);
    return entry;
  }

  /** Arms (or with `at` undefined, clears) the alarm of tunnel object `object`. */
  private arm(object: string, at: number | undefined): void {
    clearTimeout(this.alarms.get(object));
    this.alarms.delete(object);
    if (at === undefined || this.stopping) return;
    const delay = Math.max(0, at - Date.now());
    const timer = setTimeout(
      () => {
        this.alarms.delete(object);
        if (delay > MAX_TIMER_MS) return this.arm(object, at);
        void this.use(object, async (core) => {
          const entry = this.tunnels.get(object)!;
          if (entry.storage.alarm !== at) return; // replaced meanwhile
          await entry.storage.alarmFired();
          await core.alarm();
        }).catch((error: unknown) => console.error(`relay | tunnel ${object}: alarm failed`, error));
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    this.alarms.set(object, timer);
  }

  /** Drops the tunnels and gates nobody has used for a while; their storage stays. */
  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const [object, entry] of this.tunnels) {
      if (entry.busy > 0 || entry.links.size > 0 || now - entry.lastUsed < IDLE_MS) continue;
      if (entry.storage.alarm !== undefined) continue;
      // An agent on the HTTPS transport holds no link here, and a cut session waits for its agent.
      if ((await entry.core.connectedOwner()) !== undefined) continue;
      if (this.tunnels.get(object) !== entry || entry.busy > 0 || entry.links.size > 0) continue;
      this.tunnels.delete(object);
      if (!this.data && !entry.storage.empty) this.kept.set(object, entry.storage);
    }
    for (const [key, entry] of this.gates) {
      if (now - entry.lastUsed < 2 * IDLE_MS) continue;
      this.gates.delete(key);
      if (!this.data && !entry.storage.empty) this.kept.set(`gate:${key}`, entry.storage);
    }
  }
}
