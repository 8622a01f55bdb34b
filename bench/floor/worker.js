// The benchmark's Durable Object floor: the same routes as the benchmark origin, answered by a
// Durable Object with no agent behind it.
import { DurableObject } from "cloudflare:workers";

const CHUNK = new Uint8Array(64 * 1024).fill(120);

export class FloorObject extends DurableObject {
  async fetch(request) {
    const url = new URL(request.url);
    const [, route, arg] = url.pathname.split("/");
    if (route === "small") return new Response("ok: a small response from the floor\n");
    if (route === "bytes") {
      const size = Number(arg);
      const { readable, writable } = new FixedLengthStream(size);
      (async () => {
        const writer = writable.getWriter();
        for (let sent = 0; sent < size; sent += CHUNK.byteLength) {
          await writer.write(CHUNK.subarray(0, Math.min(CHUNK.byteLength, size - sent)));
        }
        await writer.close();
      })();
      return new Response(readable);
    }
    if (route === "sink") {
      let length = 0;
      for await (const chunk of request.body ?? []) length += chunk.byteLength;
      return Response.json({ length });
    }
    if (route === "sse") {
      return new Response("data: first\n\n", { headers: { "content-type": "text/event-stream" } });
    }
    if (route === "ws") {
      const { 0: client, 1: server } = new WebSocketPair();
      this.ctx.acceptWebSocket(server);
      return new Response(null, { status: 101, webSocket: client });
    }
    return new Response("no such route", { status: 404 });
  }

  webSocketMessage(socket, message) {
    socket.send(message);
  }

  webSocketClose(socket, code) {
    socket.close(code === 1005 ? 1000 : code);
  }
}

export default {
  fetch(request, env) {
    return env.FLOOR.get(env.FLOOR.idFromName("floor")).fetch(request);
  },
};
