import { HEARTBEAT } from "@burrow/protocol";
import type { Link, LinkStore } from "../core/host.ts";
import { AGENT_TAG } from "../core/tunnel-state.ts";
import { type ServerSocket, type SocketEvents, UPGRADE_HEADER, type Upgrade } from "./server.ts";

/** Where a link's socket events go: its tunnel's core (message, closed, errored). */
export interface LinkTarget {
  message(link: Link, message: string | ArrayBuffer): Promise<void>;
  closed(link: Link, code: number, reason: string): void;
  errored(link: Link, error: unknown): void;
}

/**
 * A close the peer never answers (RFC 6455 section 7.1.1: the server waits for the client's
 * close frame) ends the connection after this: a peer that stopped reading would otherwise hold
 * its socket and buffers for ws's own 30 s, or for ever where a runtime has no timer.
 */
const CLOSE_BACKSTOP_MS = 3_000;
/** A marker response the server never turned into a socket (the client left first) is dropped after this. */
const UNCLAIMED_MS = 30_000;
/**
 * A visitor's WebSocket that buffers more than this for a visitor who does not read is closed
 * (1008): the core credits the agent for the origin's messages as they arrive, so without a
 * bound here a slow visitor would pile the origin's output up in the relay's memory. Workers
 * cannot see a socket's buffer; a process can.
 */
export const VISITOR_SEND_BOUND = 16 * 1024 * 1024;

/** The relay's pending upgrades, by the id in their marker response. */
export class Upgrades {
  private readonly pending = new Map<string, { link: MemoryLink; timer: ReturnType<typeof setTimeout> }>();
  private next = 0;

  add(link: MemoryLink): string {
    const id = `${++this.next}`;
    const timer = setTimeout(() => {
      this.pending.delete(id);
      link.abandoned();
    }, UNCLAIMED_MS);
    this.pending.set(id, { link, timer });
    return id;
  }

  take(response: Response): Upgrade | undefined {
    const id = response.headers.get(UPGRADE_HEADER);
    const entry = id === null ? undefined : this.pending.get(id);
    if (!entry) return undefined;
    this.pending.delete(id!);
    clearTimeout(entry.timer);
    const link = entry.link;
    const headers: [string, string][] = [];
    let protocol: string | undefined;
    for (const [name, value] of response.headers) {
      if (name === "sec-websocket-protocol") protocol = value;
      else if (name !== UPGRADE_HEADER && !HANDSHAKE_FIELDS.has(name)) headers.push([name, value]);
    }
    return { protocol, headers, attach: (socket) => link.attach(socket), abandon: () => link.abandoned() };
  }
}

/** Fields of a marker response that the runtime's own 101 states itself. */
const HANDSHAKE_FIELDS = new Set(["connection", "upgrade", "content-length", "content-type", "transfer-encoding"]);

/**
 * One tunnel's connections, in memory (the hibernating store's counterpart on Cloudflare).
 * Heartbeats are answered here and never reach the core, as Cloudflare's auto-response does.
 */
export class MemoryLinks implements LinkStore {
  private readonly tagged = new Map<string, Set<MemoryLink>>();
  private readonly all = new Set<MemoryLink>();
  /** Set once the tunnel's core exists (the core is built with this store). */
  target: LinkTarget | undefined;

  constructor(
    private readonly upgrades: Upgrades,
    /** The tunnel's object name, for the log. */
    readonly object: string,
    /** Called when the last link is gone (the registry may drop an idle tunnel). */
    private readonly onEmpty: () => void,
  ) {}

  upgrade(tags: readonly string[], headers?: HeadersInit): { link: Link; response: Response } {
    const link = new MemoryLink(this, tags);
    this.all.add(link);
    for (const tag of tags) {
      const set = this.tagged.get(tag);
      if (set) set.add(link);
      else this.tagged.set(tag, new Set([link]));
    }
    const response = new Response(null, { status: 200, headers });
    response.headers.set(UPGRADE_HEADER, this.upgrades.add(link));
    return { link, response };
  }

  byTag(tag: string): Link[] {
    const set = this.tagged.get(tag);
    return set ? [...set] : [];
  }

  get size(): number {
    return this.all.size;
  }

  /** Every open link, for a graceful stop. */
  links(): MemoryLink[] {
    return [...this.all];
  }

  /** @internal MemoryLink's: the link is gone; the core hears it. */
  ended(link: MemoryLink, close: { code: number; reason: string } | undefined): void {
    if (!this.all.delete(link)) return;
    for (const tag of link.tags) this.tagged.get(tag)?.delete(link);
    if (close) this.deliver("closed", () => this.target?.closed(link, close.code, close.reason));
    if (this.all.size === 0) this.onEmpty();
  }

  /** @internal Runs a core handler: an exception never escapes into the server (it is logged). */
  deliver(handler: string, call: () => unknown): void {
    try {
      const result = call();
      if (result instanceof Promise) result.catch((error: unknown) => this.failed(handler, error));
    } catch (error) {
      this.failed(handler, error);
    }
  }

  private failed(handler: string, error: unknown): void {
    console.error(`relay | tunnel ${this.object}: ${handler} failed`, error);
  }
}

/** A WebSocket as the core holds it: before the server's upgrade, its sends wait here. */
export class MemoryLink implements Link {
  private attachment: unknown = null;
  private socket: ServerSocket | undefined;
  private waiting: (string | Uint8Array)[] | undefined = [];
  private closing: { code: number; reason: string } | undefined;
  private backstop: ReturnType<typeof setTimeout> | undefined;
  private done = false;
  private readonly visitor: boolean;

  constructor(
    private readonly store: MemoryLinks,
    readonly tags: readonly string[],
  ) {
    this.visitor = !tags.includes(AGENT_TAG);
  }

  send(message: string | ArrayBuffer | ArrayBufferView): void {
    if (this.done || this.closing) return;
    const data =
      typeof message === "string"
        ? message
        : ArrayBuffer.isView(message)
          ? new Uint8Array(message.buffer, message.byteOffset, message.byteLength)
          : new Uint8Array(message);
    if (this.waiting) {
      this.waiting.push(data);
      return;
    }
    this.socket!.send(data);
    if (this.visitor && this.socket!.bufferedAmount() > VISITOR_SEND_BOUND) {
      this.close(1008, `the visitor did not read ${VISITOR_SEND_BOUND} bytes the relay sent it`);
    }
  }

  close(code = 1000, reason = ""): void {
    if (this.done || this.closing) return;
    this.closing = { code, reason };
    if (this.waiting) return; // closed once the socket exists and what waits is sent (flush)
    this.socket!.close(code, reason);
    this.backstop = setTimeout(() => this.hardClose(), CLOSE_BACKSTOP_MS);
  }

  /** Closes the connection now, without waiting for the peer's close (a stop's deadline, say). */
  hardClose(): void {
    if (this.done) return;
    this.socket?.terminate();
    this.end(1006, "");
  }

  serializeAttachment(value: unknown): void {
    this.attachment = structuredClone(value);
  }

  deserializeAttachment(): unknown {
    return structuredClone(this.attachment);
  }

  /** @internal The server upgraded the request: the socket is open. */
  attach(socket: ServerSocket): SocketEvents {
    this.socket = socket;
    if (this.done) socket.terminate();
    // What the core sent before the socket existed goes out a turn later than the 101: written
    // together, a client that handles its 'open' and the first message in one read (ws) would
    // deliver the message before the page's code had a chance to listen for it.
    else setTimeout(() => this.flush(), 0);
    return {
      message: (message) => this.received(message),
      closed: (code, reason) => this.end(code, reason),
      // The core treats an error as the link's end (1006): no close follows it.
      errored: (error) => {
        if (this.done) return;
        this.done = true;
        clearTimeout(this.backstop);
        this.store.ended(this, undefined);
        this.store.deliver("errored", () => this.store.target?.errored(this, error));
      },
    };
  }

  private flush(): void {
    const waiting = this.waiting!;
    this.waiting = undefined;
    if (this.done) return;
    for (const data of waiting) this.socket!.send(data);
    if (this.closing) {
      // The core closed the link before it had a socket: the close goes out now.
      this.socket!.close(this.closing.code, this.closing.reason);
      this.backstop = setTimeout(() => this.hardClose(), CLOSE_BACKSTOP_MS);
    }
  }

  /** @internal No socket will come. */
  abandoned(): void {
    this.end(1006, "");
  }

  private received(message: string | ArrayBuffer): void {
    if (this.done) return;
    if (message === HEARTBEAT.ping) {
      this.socket?.send(HEARTBEAT.pong);
      return;
    }
    this.store.deliver("message", () => this.store.target?.message(this, message));
  }

  private end(code: number, reason: string): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.backstop);
    this.store.ended(this, { code, reason });
  }
}
