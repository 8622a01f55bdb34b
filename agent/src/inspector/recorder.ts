import type { HeaderList, RequestHeadFrame } from "@burrow/protocol";
import type { ExchangeWatch, Observer, SocketWatch } from "./observer.ts";

/** Body bytes kept per direction of one request; the rest is counted, not kept. */
export const BODY_LIMIT = 64 * 1024;
/**
 * WebSocket messages kept per socket (the newest), and bytes kept of each: 200 KiB at most, about
 * what an HTTP entry may keep.
 */
export const SOCKET_MESSAGES_KEPT = 100;
export const SOCKET_MESSAGE_LIMIT = 2 * 1024;
/** Changes reach the page at most this often per entry: a streaming body is not an event per chunk. */
const NOTIFY_MS = 50;

/** The first `limit` bytes of a body, copied, and the size of the whole. */
export class KeptBody {
  private readonly chunks: Uint8Array[] = [];
  kept = 0;
  size = 0;

  constructor(private readonly limit: number) {}

  add(bytes: Uint8Array): void {
    this.size += bytes.byteLength;
    const room = this.limit - this.kept;
    if (room <= 0) return;
    // A copy: the frame's bytes may be a view into a whole message, which must not stay alive.
    const piece = bytes.slice(0, Math.min(room, bytes.byteLength));
    this.chunks.push(piece);
    this.kept += piece.byteLength;
  }

  get truncated(): boolean {
    return this.size > this.kept;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.kept);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    return out;
  }
}

export interface SocketMessage {
  from: "visitor" | "origin";
  binary: boolean;
  /** Milliseconds since the entry started. */
  at: number;
  body: KeptBody;
}

/** One request (or visitor WebSocket) as the inspector keeps it. */
export interface Entry {
  id: number;
  tunnel: string;
  kind: "http" | "websocket";
  /** The entry this one replays. */
  replayOf?: number;
  /** Wall clock, epoch milliseconds. */
  startedAt: number;
  method: string;
  path: string;
  requestHeaders: HeaderList;
  status?: number;
  responseHeaders?: HeaderList;
  state: "pending" | "done" | "failed";
  error?: { code: string; message: string };
  request: KeptBody;
  response: KeptBody;
  /** Milliseconds from the request head's arrival (performance.now based). */
  timings: { requestEnd?: number; responseHead?: number; responseEnd?: number };
  messages?: SocketMessage[];
  /** Messages no longer kept (the oldest go first). */
  messagesDropped?: number;
  close?: { code: number; reason: string; by: "visitor" | "origin" };
}

/**
 * The last `keep` requests of this agent's tunnels, with their bodies up to BODY_LIMIT each way:
 * memory stays under keep x 2 x BODY_LIMIT plus heads (which the protocol bounds). An Observer
 * for the Forwarder.
 */
export class Recorder implements Observer {
  private readonly entries = new Map<number, Entry>();
  private readonly listeners = new Set<(entry: Entry | number) => void>();
  private readonly dirty = new Set<Entry>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private next = 1;

  constructor(
    readonly tunnel: string,
    readonly keep: number,
    private readonly bodyLimit = BODY_LIMIT,
  ) {}

  /** Newest first. */
  list(): Entry[] {
    return [...this.entries.values()].reverse();
  }

  get(id: number): Entry | undefined {
    return this.entries.get(id);
  }

  /** `listener` hears of each changed entry, and of each evicted one by its id. Returns the unsubscribe. */
  subscribe(listener: (entry: Entry | number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** What the Forwarder of tunnel `tunnel` reports to: its entries carry that tunnel's name. */
  for(tunnel: string): Observer {
    return {
      exchange: (head) => this.exchange(head, undefined, tunnel),
      socket: (head) => this.socket(head, tunnel),
    };
  }

  exchange(head: RequestHeadFrame, replayOf?: number, tunnel = this.tunnel): ExchangeWatch & { id: number } {
    const entry = this.add(head, "http", tunnel, replayOf);
    const began = performance.now();
    const since = () => performance.now() - began;
    return {
      id: entry.id,
      requestData: (bytes) => entry.request.add(bytes),
      requestEnd: () => {
        entry.timings.requestEnd = since();
      },
      responseHead: (status, headers) => {
        entry.timings.responseHead = since();
        entry.status = status;
        entry.responseHeaders = headers;
        this.changed(entry);
      },
      responseData: (bytes) => entry.response.add(bytes),
      responseEnd: () => {
        entry.timings.responseEnd = since();
        if (entry.state === "pending") entry.state = "done";
        this.changed(entry);
      },
      fail: (code, message) => this.failed(entry, code, message),
    };
  }

  socket(head: RequestHeadFrame, tunnel = this.tunnel): SocketWatch {
    const entry = this.add(head, "websocket", tunnel);
    entry.messages = [];
    entry.messagesDropped = 0;
    const began = performance.now();
    /** A visitor's message arrives in pieces: the one being put together. */
    let partial: SocketMessage | undefined;
    return {
      open: (status, headers) => {
        entry.timings.responseHead = performance.now() - began;
        entry.status = status;
        entry.responseHeaders = headers;
        this.changed(entry);
      },
      message: (from, bytes, binary, final) => {
        let message = from === "visitor" ? partial : undefined;
        if (!message) {
          message = { from, binary, at: performance.now() - began, body: new KeptBody(SOCKET_MESSAGE_LIMIT) };
          entry.messages!.push(message);
          if (entry.messages!.length > SOCKET_MESSAGES_KEPT) {
            entry.messages!.shift();
            entry.messagesDropped!++;
          }
        }
        message.body.add(bytes);
        if (from === "visitor") partial = final ? undefined : message;
        this.changed(entry);
      },
      close: (code, reason, by) => {
        entry.timings.responseEnd = performance.now() - began;
        entry.close = { code, reason, by };
        if (entry.state === "pending") entry.state = "done";
        this.changed(entry);
      },
      fail: (code, message) => this.failed(entry, code, message),
    };
  }

  private add(head: RequestHeadFrame, kind: Entry["kind"], tunnel: string, replayOf?: number): Entry {
    const entry: Entry = {
      id: this.next++,
      tunnel,
      kind,
      replayOf,
      startedAt: Date.now(),
      method: head.method,
      path: head.path,
      requestHeaders: head.headers,
      state: "pending",
      request: new KeptBody(this.bodyLimit),
      response: new KeptBody(this.bodyLimit),
      timings: {},
    };
    this.entries.set(entry.id, entry);
    for (const [id] of this.entries) {
      if (this.entries.size <= this.keep) break;
      this.entries.delete(id);
      for (const listener of this.listeners) listener(id);
    }
    this.changed(entry);
    return entry;
  }

  private failed(entry: Entry, code: string, message: string): void {
    if (entry.state !== "pending") return;
    entry.state = "failed";
    entry.error = { code, message };
    this.changed(entry);
  }

  private changed(entry: Entry): void {
    if (this.listeners.size === 0) return;
    this.dirty.add(entry);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const entries = [...this.dirty];
      this.dirty.clear();
      for (const changed of entries) {
        if (!this.entries.has(changed.id)) continue;
        for (const listener of this.listeners) listener(changed);
      }
    }, NOTIFY_MS);
  }
}
