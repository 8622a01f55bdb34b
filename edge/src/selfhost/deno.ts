// Deno: Deno.serve speaks web Request/Response natively and hands over the peer's address as
// the handler's second argument; `Deno.upgradeWebSocket(request, { protocol })` returns the
// 101 to answer with and a web WebSocket that is not open yet: sending before its `open` event
// throws, so the link is attached there. A web WebSocket has no way to drop its connection
// without the closing handshake: the close backstop can only forget such a socket (Deno's own
// idle timeout, 120 s of unanswered pings, ends it). Deno.serve prints its own "Listening on"
// line unless given onListen.
import { ListenError, MAX_SOCKET_MESSAGE, type ServeRelay } from "./server.ts";

interface DenoServer {
  finished: Promise<void>;
  shutdown(): Promise<void>;
  addr: { port: number };
}

interface DenoApi {
  serve(
    options: Record<string, unknown>,
    handler: (request: Request, info: { remoteAddr: { hostname: string } }) => Promise<Response>,
  ): DenoServer;
  upgradeWebSocket(request: Request, options: { protocol?: string }): { socket: WebSocket; response: Response };
  errors: { AddrInUse: new () => Error; PermissionDenied: new () => Error; NotCapable?: new () => Error };
}

declare const Deno: DenoApi;

export const serveDeno: ServeRelay = async ({ host, port, tls, handler }) => {
  const abort = new AbortController();
  let server: DenoServer;
  try {
    server = Deno.serve(
      { hostname: host, port, ...(tls ?? {}), signal: abort.signal, onListen: () => {} },
      async (request, info) => {
        const answer = await handler.fetch(request, info.remoteAddr.hostname);
        const upgrade = handler.takeUpgrade(answer);
        if (!upgrade) return answer;
        // The subprotocol is stated on the 101 here: upgradeWebSocket's own check splits the
        // client's list on ", " only, and refuses "chat.v1,chat.v2" as ws sends it (Deno 2.9).
        const { socket, response } = Deno.upgradeWebSocket(request, {});
        if (upgrade.protocol !== undefined) response.headers.set("sec-websocket-protocol", upgrade.protocol);
        for (const [name, value] of upgrade.headers) response.headers.append(name, value);
        socket.binaryType = "arraybuffer";
        let events: ReturnType<typeof upgrade.attach> | undefined;
        socket.onopen = () => {
          events = upgrade.attach({
            send: (message) => socket.send(message),
            close: (code, reason) => socket.close(code, reason),
            terminate: () => {},
            bufferedAmount: () => socket.bufferedAmount,
          });
        };
        socket.onmessage = (event) => {
          if (event.data.byteLength > MAX_SOCKET_MESSAGE) return socket.close(1009, "message too big");
          events?.message(event.data);
        };
        socket.onclose = (event) => (events ? events.closed(event.code, event.reason) : upgrade.abandon());
        socket.onerror = (event) => events?.errored((event as ErrorEvent).error ?? new Error("WebSocket error"));
        return response;
      },
    );
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) throw new ListenError("in-use", `${host}:${port} is already in use`);
    const denied =
      error instanceof Deno.errors.PermissionDenied || (Deno.errors.NotCapable && error instanceof Deno.errors.NotCapable);
    if (denied) throw new ListenError("denied", `listening on ${host}:${port} is not permitted: ${(error as Error).message}`);
    throw new ListenError("unknown", `cannot listen on ${host}:${port}: ${(error as Error).message}`);
  }
  return {
    port: server.addr.port,
    async close(graceMs) {
      abort.abort();
      await Promise.race([server.finished, new Promise((resolve) => setTimeout(resolve, graceMs))]);
    },
  };
};
