// Bun: Bun.serve speaks web Request/Response natively; a WebSocket is upgraded with
// `server.upgrade(request, { headers, data })` from inside fetch, which then returns nothing,
// and its events go to the one `websocket` handler of the server (the link travels in `data`).
// Bun's defaults would cut the relay's long connections: the HTTP idle timeout (10 s) ends a
// poll waiting 25 s, and maxRequestBodySize (128 MB) refuses a large upload; both are lifted.
// The subprotocol is answered by passing Sec-WebSocket-Protocol in the upgrade's headers.
import { ListenError, MAX_SOCKET_MESSAGE, type ServeRelay, type SocketEvents, type Upgrade } from "./server.ts";

interface BunSocket {
  data: { upgrade: Upgrade; events?: SocketEvents };
  send(message: string | Uint8Array): number;
  close(code?: number, reason?: string): void;
  terminate(): void;
  getBufferedAmount(): number;
}

interface BunServer {
  port: number;
  upgrade(request: Request, options: { headers: [string, string][]; data: BunSocket["data"] }): boolean;
  requestIP(request: Request): { address: string } | null;
  stop(closeActive?: boolean): Promise<void>;
}

declare const Bun: { serve(options: Record<string, unknown>): BunServer };

export const serveBun: ServeRelay = async ({ host, port, tls, handler }) => {
  let server: BunServer;
  try {
    server = Bun.serve({
      hostname: host,
      port,
      tls: tls ? { cert: tls.cert, key: tls.key } : undefined,
      idleTimeout: 0,
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
      async fetch(request: Request, bun: BunServer): Promise<Response | undefined> {
        const answer = await handler.fetch(request, bun.requestIP(request)?.address);
        const upgrade = handler.takeUpgrade(answer);
        if (!upgrade) return answer;
        const headers = [...upgrade.headers];
        if (upgrade.protocol !== undefined) headers.push(["Sec-WebSocket-Protocol", upgrade.protocol]);
        if (bun.upgrade(request, { headers, data: { upgrade } })) return undefined;
        upgrade.abandon();
        return new Response("400 bad-request\n\nThis request cannot be upgraded to a WebSocket.\n", { status: 400 });
      },
      websocket: {
        maxPayloadLength: MAX_SOCKET_MESSAGE,
        perMessageDeflate: false,
        open(ws: BunSocket) {
          ws.data.events = ws.data.upgrade.attach({
            send: (message) => void ws.send(message),
            close: (code, reason) => ws.close(code, reason),
            terminate: () => ws.terminate(),
            bufferedAmount: () => ws.getBufferedAmount(),
          });
        },
        message(ws: BunSocket, message: string | Uint8Array) {
          if (typeof message === "string") return ws.data.events?.message(message);
          const copy = message.buffer.slice(message.byteOffset, message.byteOffset + message.byteLength) as ArrayBuffer;
          ws.data.events?.message(copy);
        },
        close(ws: BunSocket, code: number, reason: string) {
          ws.data.events?.closed(code, reason);
        },
      },
      error(error: Error) {
        console.error("relay | a request failed", error);
        return new Response("500 relay-error\n", { status: 500 });
      },
    });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "EADDRINUSE") throw new ListenError("in-use", `${host}:${port} is already in use`);
    if (code === "EACCES") throw new ListenError("denied", `listening on ${host}:${port} is not permitted`);
    throw new ListenError("unknown", `cannot listen on ${host}:${port}: ${(error as Error).message}`);
  }
  return {
    port: server.port,
    async close(graceMs) {
      const stopped = server.stop(false);
      await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, graceMs))]);
      await server.stop(true);
    },
  };
};
