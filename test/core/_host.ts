// The relay's core in this process, on an in-memory host: links that record what the core
// sends and let a test speak as an agent or a visitor, the self-hosted relay's storage (in
// memory, without a data directory) whose alarm the test fires, a registry of cores by object
// name (shards included) and GateCores for the gates. The self-hosted relay's registry is not
// used: it arms alarms on real timers and hands links to real sockets, where a test needs to
// fire the alarm itself and to speak on a link by hand. No workerd, no sockets, no child
// processes: a test of the core runs in milliseconds.
import {
  CONNECT_PATH,
  concatBytes,
  decodeFrames,
  encodeFrame,
  type Frame,
  FrameType,
  type HelloFrame,
  PROTOCOL_VERSION,
  type ReadyFrame,
} from "@burrow/protocol";
import { onTestFinished, vi } from "vitest";
import { handleRequest } from "../../edge/src/core/front.ts";
import { GateCore } from "../../edge/src/core/gate.ts";
import type {
  GatePeer,
  Link,
  LinkStore,
  PublicPort,
  RelayHost,
  SettingVars,
  TunnelHost,
  TunnelPeer,
} from "../../edge/src/core/host.ts";
import { type RelaySettings, readSettings } from "../../edge/src/core/settings.ts";
import { TunnelCore } from "../../edge/src/core/tunnel.ts";
import { ObjectStorage } from "../../edge/src/selfhost/_storage.ts";
import { streamingResponse, wholeResponse } from "../../edge/src/selfhost/_streaming.ts";

/** Marks the response that completes an upgrade (Node's Response refuses 101); its value is the link's id. */
const UPGRADE_HEADER = "x-memory-upgrade";

export const NO_RULES: HelloFrame["rules"] = { basicAuth: [], allowIp: [], webhooks: [] };

/** The address visitors and agents come from unless a test says otherwise. */
export const CLIENT_IP = "203.0.113.7";

/** The hello a well-behaved agent sends, with `fields` changed. */
export function helloFrame(name: string, fields: Partial<HelloFrame> = {}): HelloFrame {
  return {
    type: FrameType.Hello,
    version: PROTOCOL_VERSION,
    agent: "core-test",
    name,
    token: "",
    claim: `claim-of-${name}-0123456789`,
    rules: NO_RULES,
    resume: null,
    ...fields,
  };
}

/** Frames back to back in one message, as either side sends them. */
export function message(...frames: Frame[]): Uint8Array {
  const parts = frames.map(encodeFrame);
  return concatBytes(
    parts,
    parts.reduce((size, part) => size + part.byteLength, 0),
  );
}

/**
 * Keeps the core's warnings (an agent that broke the protocol, say) out of the test output and
 * returns them, for the test to check that they name the tunnel; TEST_DEBUG=1 prints them too.
 */
export function quietWarnings(): string[] {
  const warnings: string[] = [];
  const spy = vi.spyOn(console, "warn").mockImplementation((...parts: unknown[]) => {
    warnings.push(parts.map(String).join(" "));
    if (process.env.TEST_DEBUG) process.stderr.write(`${parts.map(String).join(" ")}\n`);
  });
  onTestFinished(() => spy.mockRestore());
  return warnings;
}

/** Waits until the timers and promises queued now have run (the core flushes frames on a zero timer). */
export const tick = (ms = 0) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * One WebSocket (or what poses as one) the core holds. What the core sends is kept in `sent`;
 * `deliver` and `cut` are the other end speaking and leaving.
 */
export class MemoryLink implements Link {
  readonly sent: (string | Uint8Array)[] = [];
  closed: { code: number | undefined; reason: string | undefined } | undefined;
  /** Frames `next` has handed out so far. */
  private taken = 0;
  private attachment: unknown = null;
  private wake: (() => void) | undefined;

  constructor(
    readonly tunnel: MemoryTunnel,
    readonly id: string,
    readonly tags: readonly string[],
  ) {}

  send(data: string | ArrayBuffer | ArrayBufferView): void {
    if (this.closed) throw new Error("WebSocket is already closed");
    if (typeof data === "string") this.sent.push(data);
    else if (ArrayBuffer.isView(data)) this.sent.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice());
    else this.sent.push(new Uint8Array(data).slice());
    this.wake?.();
  }

  close(code?: number, reason?: string): void {
    if (this.closed) return;
    this.closed = { code, reason };
    this.tunnel.drop(this);
    this.wake?.();
  }

  serializeAttachment(value: unknown): void {
    this.attachment = structuredClone(value);
  }

  deserializeAttachment(): unknown {
    return structuredClone(this.attachment);
  }

  /** Every frame the core sent on this link so far, decoded. */
  frames(): Frame[] {
    return this.sent.flatMap((m) => (typeof m === "string" ? [] : decodeFrames(m)));
  }

  /** The next frame not yet taken (Acks skipped), waiting up to `timeoutMs` for it. */
  async next(timeoutMs = 2000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frames = this.frames().filter((f) => f.type !== FrameType.Ack);
      if (frames.length > this.taken) return frames[this.taken++]!;
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) {
        const why = this.closed ? `the link closed (${this.closed.code} ${this.closed.reason})` : `none within ${timeoutMs} ms`;
        throw new Error(`no frame from the core: ${why}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next frame of `type`, skipping others. */
  async nextOf<T extends Frame["type"]>(type: T, timeoutMs = 2000): Promise<Extract<Frame, { type: T }>> {
    for (;;) {
      const frame = await this.next(timeoutMs);
      if (frame.type === type) return frame as Extract<Frame, { type: T }>;
    }
  }

  /** Frames sent on this link that have not been taken by `next` yet (Acks left out). */
  pending(): Frame[] {
    return this.frames()
      .filter((f) => f.type !== FrameType.Ack)
      .slice(this.taken);
  }

  /** The other end sends `frames` as one message, as an agent does. */
  deliver(...frames: Frame[]): Promise<void> {
    return this.deliverBytes(message(...frames));
  }

  /** The other end sends these bytes as one binary message. */
  deliverBytes(bytes: Uint8Array): Promise<void> {
    return this.tunnel.core.message(this, bytes.slice().buffer as ArrayBuffer);
  }

  /** The other end closes (1006: the connection broke, as the runtime reports a cut). */
  cut(code = 1006, reason = ""): void {
    if (!this.closed) this.closed = { code, reason };
    this.tunnel.drop(this);
    this.tunnel.core.closed(this, code, reason);
  }

  /** Resolves once the core closed the link (or throws after `timeoutMs`). */
  async whenClosed(timeoutMs = 2000): Promise<{ code: number | undefined; reason: string | undefined }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`the core did not close the link within ${timeoutMs} ms`);
      await tick(5);
    }
    return this.closed;
  }
}

/** One tunnel object (a name, or a shard's object name): its core on in-memory links and storage. */
export class MemoryTunnel {
  core: TunnelCore;
  readonly links = new Set<MemoryLink>();
  /** Resolves once the core's start() ran; the peer's calls wait for it, as blockConcurrencyWhile makes them. */
  ready: Promise<void>;
  private readonly host: TunnelHost;
  readonly peer: TunnelPeer;
  private linkIds = 0;

  constructor(
    readonly relay: MemoryRelay,
    readonly object: string,
    readonly storage = new ObjectStorage(undefined, () => {}),
  ) {
    const links: LinkStore = {
      upgrade: (tags, headers) => {
        const link = new MemoryLink(this, `${object}/${++this.linkIds}`, tags);
        this.links.add(link);
        const fields = new Headers(headers);
        fields.set(UPGRADE_HEADER, link.id);
        return { link, response: new Response(null, { status: 200, headers: fields }) };
      },
      byTag: (tag) => [...this.links].filter((link) => link.tags.includes(tag)),
    };
    const host: TunnelHost = {
      settings: relay.settings,
      tunnel: (name) => relay.tunnel(name),
      gate: (key) => relay.gate(key),
      waitUntil: (work) => relay.waitUntil(work),
      isUpgrade: (response) => relay.isUpgrade(response),
      withUpgradeHeaders: (response, headers) => relay.withUpgradeHeaders(response, headers),
      links,
      storage: this.storage,
      // A write to the body settles once the visitor read the chunk (no queue on the readable
      // side), so credit goes back to the agent only for what was read.
      streamingResponse,
      wholeResponse,
      publicPort: relay.ports?.forTunnel(object),
    };
    this.host = host;
    this.core = new TunnelCore(host);
    this.ready = this.core.start();
    const when = <T>(call: () => Promise<T>) => this.ready.then(call);
    this.peer = {
      fetch: (input, init) => when(() => this.core.fetch(input, init)),
      liveShards: () => when(() => this.core.liveShards()),
      shardState: (shard, up) => when(() => this.core.shardState(shard, up)),
      evictStale: (primary) => when(() => this.core.evictStale(primary)),
      connectedOwner: () => when(() => this.core.connectedOwner()),
      admitShard: (hello, shard, name) => when(() => this.core.admitShard(hello, shard, name)),
    };
  }

  /**
   * The runtime evicted the object while its links stayed open (a Durable Object's hibernation):
   * a new core, with nothing in memory, over the same links (and their attachments) and storage.
   */
  hibernate(): void {
    this.core = new TunnelCore(this.host);
    this.ready = this.core.start();
  }

  /** The link the upgrade `response` completes. */
  link(response: Response): MemoryLink {
    const id = response.headers.get(UPGRADE_HEADER);
    const link = [...this.links].find((l) => l.id === id);
    if (!link)
      throw new Error(`not an upgrade of tunnel ${this.object}: ${response.status} ${response.headers.get("x-burrow-error")}`);
    return link;
  }

  /** A closed link is no longer among the open ones (byTag). */
  drop(link: MemoryLink): void {
    this.links.delete(link);
  }

  /** The host fires the alarm the core set. */
  async fireAlarm(): Promise<void> {
    await this.storage.alarmFired();
    await this.core.alarm();
  }
}

/**
 * Public TCP ports in memory, as a self-hosted relay with --tcp-ports has them: each name holds
 * one of the range until released, and `events` records what the core asked ("open demo 20000",
 * "close demo", "release demo", "none demo"). No socket listens: a test hands the core its
 * connections itself (TunnelCore.acceptTcp).
 */
export class MemoryPorts {
  readonly events: string[] = [];
  readonly held = new Map<string, number>();
  readonly listening = new Set<string>();

  constructor(
    readonly first = 20_000,
    readonly last = 20_099,
  ) {}

  forTunnel(object: string): PublicPort {
    return {
      open: async () => {
        let port = this.held.get(object);
        if (port === undefined) {
          const taken = new Set(this.held.values());
          for (let candidate = this.first; candidate <= this.last && port === undefined; candidate++) {
            if (!taken.has(candidate)) port = candidate;
          }
          if (port === undefined) {
            this.events.push(`none ${object}`);
            return { problem: `no port of the relay's --tcp-ports ${this.first}-${this.last} is free` };
          }
          this.held.set(object, port);
        }
        if (!this.listening.has(object)) this.events.push(`open ${object} ${port}`);
        this.listening.add(object);
        return { port };
      },
      close: () => {
        if (this.listening.delete(object)) this.events.push(`close ${object}`);
      },
      release: () => {
        this.listening.delete(object);
        if (this.held.delete(object)) this.events.push(`release ${object}`);
      },
    };
  }
}

/** An agent connected through the front: its link, and the relay's answer to its hello. */
export interface MemoryAgent {
  link: MemoryLink;
  ready: ReadyFrame;
}

/**
 * The relay's host in memory: what every part of the core asks of it (settings, tunnels by
 * object name, gates, waitUntil, upgrades), and the test's way in through the front.
 */
export class MemoryRelay implements RelayHost {
  readonly settings: RelaySettings;
  readonly tunnels = new Map<string, MemoryTunnel>();
  readonly gates = new Map<string, GateCore>();
  /** What each gate stores (kept across a restart). */
  private readonly gateStorage: Map<string, ObjectStorage>;
  /** Tunnels' storage from before a restart, for their cores' start(). */
  private readonly stored: Map<string, ObjectStorage>;
  /** What the core handed to waitUntil. */
  readonly work: Promise<unknown>[] = [];
  /** Public TCP ports (--tcp-ports), for tunnels made from now on; none by default, as on Cloudflare. */
  ports: MemoryPorts | undefined;

  constructor(
    readonly vars: SettingVars = {},
    before?: { stored: Map<string, ObjectStorage>; gateStorage: Map<string, ObjectStorage> },
  ) {
    const { settings, problems } = readSettings(vars);
    if (problems.length > 0) throw new Error(`bad settings for the test relay: ${problems.join("; ")}`);
    this.settings = settings;
    this.stored = before?.stored ?? new Map();
    this.gateStorage = before?.gateStorage ?? new Map();
  }

  /** The same relay after a restart (a deploy, a crash): storage kept, links and memory gone. */
  restarted(): MemoryRelay {
    const stored = new Map([...this.tunnels].map(([object, tunnel]) => [object, tunnel.storage]));
    const relay = new MemoryRelay(this.vars, { stored, gateStorage: this.gateStorage });
    relay.ports = this.ports;
    return relay;
  }

  tunnel(object: string): TunnelPeer {
    return this.object(object).peer;
  }

  /** Tunnel object `object` (made on first use, as the runtime makes a Durable Object). */
  object(object: string): MemoryTunnel {
    let tunnel = this.tunnels.get(object);
    if (!tunnel) {
      tunnel = new MemoryTunnel(this, object, this.stored.get(object));
      this.tunnels.set(object, tunnel);
    }
    return tunnel;
  }

  gate(key: string): GatePeer {
    let gate = this.gates.get(key);
    if (!gate) {
      const storage = this.gateStorage.get(key) ?? new ObjectStorage(undefined, () => {});
      this.gateStorage.set(key, storage);
      gate = new GateCore(storage);
      this.gates.set(key, gate);
    }
    return gate;
  }

  waitUntil(work: Promise<unknown>): void {
    this.work.push(work);
  }

  isUpgrade(response: Response): boolean {
    return response.headers.has(UPGRADE_HEADER);
  }

  withUpgradeHeaders(response: Response, headers: Headers): Response {
    const fields = new Headers(headers);
    fields.set(UPGRADE_HEADER, response.headers.get(UPGRADE_HEADER)!);
    return new Response(null, { status: response.status, headers: fields });
  }

  /** A request to the relay, through its front, from `clientIp` (null: an address the host cannot tell). */
  fetch(url: string, init: RequestInit = {}, clientIp: string | null = CLIENT_IP): Promise<Response> {
    const body = init.body ? ({ duplex: "half" } as RequestInit) : {};
    return handleRequest(new Request(new URL(url, "http://relay.test"), { ...init, ...body }), this, clientIp ?? undefined);
  }

  /** A visitor's request to tunnel `name`, by path (`/t/<name>/...`). */
  visit(name: string, path = "/", init: RequestInit = {}, clientIp: string | null = CLIENT_IP): Promise<Response> {
    return this.fetch(`/t/${name}${path}`, init, clientIp);
  }

  /** An agent's connection for `name`, upgraded, before its hello. */
  async connect(name: string, clientIp: string | null = CLIENT_IP, query = ""): Promise<MemoryLink> {
    const response = await this.fetch(`${CONNECT_PATH}?name=${name}${query}`, { headers: { upgrade: "websocket" } }, clientIp);
    const shard = /[?&]shard=(\d+)/.exec(query)?.[1];
    return this.object(shard && shard !== "0" ? `${name}#${shard}` : name).link(response);
  }

  /** Connects (shard `shard` of the tunnel) and says hello; returns the link with the core's answer (Ready or Refused). */
  async say(
    name: string,
    fields: Partial<HelloFrame> = {},
    clientIp?: string,
    shard = 0,
  ): Promise<{ link: MemoryLink; answer: Frame }> {
    const link = await this.connect(name, clientIp, shard ? `&shard=${shard}` : "");
    await link.deliver(helloFrame(name, fields));
    return { link, answer: await link.next() };
  }

  /** Connects, says hello and expects Ready. */
  async agent(name: string, fields: Partial<HelloFrame> = {}, clientIp?: string): Promise<MemoryAgent> {
    const { link, answer } = await this.say(name, fields, clientIp);
    if (answer.type !== FrameType.Ready) throw new Error(`the core did not answer Ready: ${JSON.stringify(answer)}`);
    return { link, ready: answer };
  }

  /** Waits for what the core handed to waitUntil so far. */
  async settled(): Promise<void> {
    for (let seen = 0; seen < this.work.length; seen++) await this.work[seen];
  }
}
