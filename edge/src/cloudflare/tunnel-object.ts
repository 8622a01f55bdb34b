// A tunnel (or a shard of one) as a Durable Object: the core's TunnelCore on the object's
// hibernating WebSockets, storage and alarm. Decides nothing: see ../core/tunnel.ts.

import { DurableObject } from "cloudflare:workers";
import { HEARTBEAT, type HelloFrame } from "@burrow/protocol";
import type { Link, LinkStore, ShardAdmission, TunnelHost } from "../core/host.ts";
import { TunnelCore } from "../core/tunnel.ts";
import type { Env } from "./env.ts";
import { relayHost } from "./host.ts";

export class TunnelObject extends DurableObject<Env> {
  private readonly core: TunnelCore;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Answered by the runtime itself, without waking this object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT.ping, HEARTBEAT.pong));
    const links: LinkStore = {
      upgrade(tags, headers) {
        const { 0: client, 1: server } = new WebSocketPair();
        ctx.acceptWebSocket(server, [...tags]);
        return { link: server, response: new Response(null, { status: 101, webSocket: client, headers }) };
      },
      byTag: (tag) => ctx.getWebSockets(tag),
    };
    const host: TunnelHost = {
      ...relayHost(env),
      links,
      storage: {
        get: (key) => ctx.storage.get(key),
        put: (key, value) => ctx.storage.put(key, value),
        delete: async (key) => void (await ctx.storage.delete(key)),
        deleteAll: () => ctx.storage.deleteAll(),
        setAlarm: (at) => ctx.storage.setAlarm(at),
      },
      waitUntil: (work) => ctx.waitUntil(work),
      streamingResponse(status, headers, length) {
        const { readable, writable } = length === undefined ? new IdentityTransformStream() : new FixedLengthStream(length);
        // `encodeBody: "manual"`: the origin's bytes are already encoded as its Content-Encoding
        // says; without it the runtime would compress them a second time.
        return { response: new Response(readable, { status, headers, encodeBody: "manual" }), writable };
      },
      wholeResponse: (status, headers, body) => new Response(body, { status, headers, encodeBody: "manual" }),
    };
    this.core = new TunnelCore(host);
    void ctx.blockConcurrencyWhile(() => this.core.start());
  }

  override fetch(request: Request): Promise<Response> {
    return this.core.fetch(request);
  }

  override webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    return this.core.message(socket as Link, message);
  }

  override async webSocketClose(socket: WebSocket, code: number, reason: string): Promise<void> {
    this.core.closed(socket, code, reason);
  }

  override async webSocketError(socket: WebSocket, error: unknown): Promise<void> {
    this.core.errored(socket, error);
  }

  override alarm(): Promise<void> {
    return this.core.alarm();
  }

  // The core's calls to other objects of its tunnel (see TunnelPeer), as RPC methods.
  liveShards(): Promise<number[]> {
    return this.core.liveShards();
  }

  shardState(shard: number, up: boolean): Promise<void> {
    return this.core.shardState(shard, up);
  }

  admitShard(hello: HelloFrame, shard: number, name: string): Promise<ShardAdmission> {
    return this.core.admitShard(hello, shard, name);
  }

  evictStale(primary: string): Promise<void> {
    return this.core.evictStale(primary);
  }

  connectedOwner(): Promise<string | undefined> {
    return this.core.connectedOwner();
  }
}
