// Node: node:http has no web `Request`/`Response` server and no WebSocket server, so this
// adapter converts both ways (IncomingMessage -> Request; Response -> writeHead and a body, a
// whole one in one write, a streamed one written as the socket drains) and upgrades
// with `ws`'s handleUpgrade. A WebSocket request reaches Node's 'upgrade' event, never
// 'request': the relay answers it like any other, and a marker response (UPGRADE_HEADER)
// becomes ws's 101. Node's own limits are raised where the relay checks its own (the head size)
// or where they would cut long polls and uploads (requestTimeout, 300 s by default since 18).
import { type EventEmitter, once } from "node:events";
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";
import { EdgeError } from "../core/errors.ts";
import { wholeBody } from "./_streaming.ts";
import { ListenError, MAX_SOCKET_MESSAGE, type RelayHandler, type ServeRelay, type Upgrade } from "./server.ts";

export const serveNode: ServeRelay = async ({ host, port, tls, maxHeadBytes, handler }) => {
  // Node's parser refuses a head past maxHeaderSize before the relay sees it: set well past the
  // relay's own limit, so that the relay measures and names a head over it (as on workerd), and
  // a head past even Node's gets the relay's 431 page below, not a bare 400.
  const headerLimit = Math.max(2 * maxHeadBytes, 128 * 1024);
  const options: http.ServerOptions = { maxHeaderSize: headerLimit, requestTimeout: 0, keepAliveTimeout: 65_000 };
  const server = tls ? https.createServer({ ...options, cert: tls.cert, key: tls.key }) : http.createServer(options);
  // A client may end its side once the request is sent (RFC 9112 9.6 lets it); Node's server
  // would then drop the requests it has not answered yet, so that a visitor who half-closes
  // gets no answer from a tunnel. Node's own flag, not in the typings.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  const scheme = tls ? "https" : "http";
  const upgrades = new WeakMap<http.IncomingMessage, Upgrade>();
  const sockets = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_SOCKET_MESSAGE,
    perMessageDeflate: false,
    handleProtocols: (offered, request) => {
      const chosen = upgrades.get(request)?.protocol;
      return chosen !== undefined && offered.has(chosen) ? chosen : false;
    },
  });
  sockets.on("headers", (lines, request) => {
    for (const [name, value] of upgrades.get(request)?.headers ?? []) lines.push(`${name}: ${value}`);
  });
  server.on("request", (request, response) => void serveRequest(request, response, scheme, handler));
  server.on(
    "upgrade",
    (request, socket: Socket, head) => void serveUpgrade(request, socket, head, scheme, handler, sockets, upgrades),
  );
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) return void socket.destroy();
    if (error.code !== "HPE_HEADER_OVERFLOW") {
      return void socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    }
    const message = `The request's head is over ${headerLimit} bytes; the limit is ${maxHeadBytes} (MAX_REQUEST_HEAD_BYTES).`;
    void writeRaw(socket, new EdgeError(431, "request-header-too-large", message).toResponse());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => reject(listenError(error, host, port)));
    server.listen(port, host, resolve);
  });
  server.on("error", (error) => console.error("relay | server error", error));
  return {
    port: (server.address() as AddressInfo).port,
    async close(graceMs) {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
    },
  };
};

function listenError(error: NodeJS.ErrnoException, host: string, port: number): Error {
  if (error.code === "EADDRINUSE") return new ListenError("in-use", `${host}:${port} is already in use`);
  if (error.code === "EACCES") return new ListenError("denied", `listening on ${host}:${port} is not permitted`);
  return new ListenError("unknown", `cannot listen on ${host}:${port}: ${error.message}`);
}

/** The request as a web Request: absolute URL from the Host, the body as a stream. */
function webRequest(request: http.IncomingMessage, scheme: string, signal?: AbortSignal): Request {
  const target = request.url ?? "/";
  // Origin-form only ("/path"): an absolute-form target names a host the relay is not.
  const path = target.startsWith("/") ? target : new URL(target).pathname + new URL(target).search;
  const headers = new Headers();
  const raw = request.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  const method = request.method ?? "GET";
  // undici's Request refuses a GET or HEAD with a body; the relay refuses those by their fields (relay.ts).
  const body = method === "GET" || method === "HEAD" ? null : bodyStream(request);
  return new Request(`${scheme}://${request.headers.host ?? "localhost"}${path}`, {
    method,
    headers,
    body,
    signal,
    redirect: "manual",
    duplex: "half",
  } as RequestInit);
}

/**
 * The request's body as a web stream, read as the relay pulls. Not Readable.toWeb: on Node 20 it
 * enqueues data that arrives after the relay cancelled the body (a refused or timed-out upload)
 * and throws ERR_INVALID_STATE "Controller is already closed" outside any handler, which ends
 * the process. Once cancelled, the rest is read and dropped, so that the answer still goes out.
 */
function bodyStream(request: http.IncomingMessage): ReadableStream<Uint8Array> {
  let settled = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      request.on("data", (chunk: Buffer) => {
        if (settled) return;
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if ((controller.desiredSize ?? 0) <= 0) request.pause();
      });
      request.once("end", () => {
        if (settled) return;
        settled = true;
        controller.close();
      });
      request.once("close", () => {
        if (settled) return;
        settled = true;
        controller.error(new Error("the visitor went away before the end of the body"));
      });
      request.on("error", () => {}); // the close above says it
      request.pause();
    },
    pull() {
      request.resume();
    },
    cancel() {
      settled = true;
      request.resume();
    },
  });
}

/**
 * One request. Its Request gets no signal of ours: the core's visit reaches the tunnel through
 * the front's own request, which carries none in one process either, and an AbortController
 * that undici's Request follows cost about 15 µs of CPU per small request (bench/profile.ts).
 * The client's departure stops the body below through the response's "close".
 */
async function serveRequest(
  request: http.IncomingMessage,
  response: http.ServerResponse,
  scheme: string,
  handler: RelayHandler,
): Promise<void> {
  let answer: Response;
  try {
    answer = await handler.fetch(webRequest(request, scheme), request.socket.remoteAddress);
  } catch (error) {
    // An unparsable Host or target: the relay never saw it.
    answer =
      error instanceof EdgeError
        ? error.toResponse()
        : new EdgeError(400, "bad-request", "This request cannot be parsed.").toResponse();
    response.shouldKeepAlive = false;
  }
  // Node adds its own `Keep-Alive: timeout=N` to every answer; the relay sends no hop-by-hop
  // field of its own (on Cloudflare none arrives either). The connection still idles out after
  // server.keepAliveTimeout: the field only announces it.
  (response as unknown as { _keepAliveTimeout: number })._keepAliveTimeout = 0;
  const fields: string[] = [];
  let length = false;
  for (const [name, value] of answer.headers) {
    fields.push(name, value);
    if (name === "content-length") length = true;
  }
  const whole = wholeBody(answer);
  if (whole) {
    // As Bun, Deno and workerd do for a body of bytes; Node would send it chunked.
    if (!length && request.method !== "HEAD" && answer.status !== 204 && answer.status !== 304) {
      fields.push("content-length", String(whole.byteLength));
    }
    response.writeHead(answer.status, answer.statusText || undefined, fields);
    response.end(whole);
    return;
  }
  response.writeHead(answer.status, answer.statusText || undefined, fields);
  if (!answer.body) {
    response.end();
    return;
  }
  const reader = answer.body.getReader();
  const cancel = () => void reader.cancel().catch(() => {});
  // A visitor may leave before the answer's head: cancelling the body is what tells the agent,
  // and so the origin, to stop.
  if (response.destroyed) return cancel();
  response.once("close", () => {
    if (!response.writableFinished) cancel();
  });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (response.destroyed) return cancel();
      if (!response.write(value)) await Promise.race([once(response, "drain"), once(response, "close")]);
    }
    response.end();
  } catch (error) {
    // A body that failed (a truncated origin response): the client must see an abort, not an end.
    response.destroy(error as Error);
  }
}

async function serveUpgrade(
  request: http.IncomingMessage,
  socket: Socket,
  head: Buffer,
  scheme: string,
  handler: RelayHandler,
  sockets: WebSocketServer,
  upgrades: WeakMap<http.IncomingMessage, Upgrade>,
): Promise<void> {
  const abort = new AbortController();
  socket.on("close", () => abort.abort());
  socket.on("error", () => {});
  let answer: Response;
  try {
    answer = await handler.fetch(webRequest(request, scheme, abort.signal), socket.remoteAddress);
  } catch (error) {
    const refusal = error instanceof EdgeError ? error : new EdgeError(400, "bad-request", "This request cannot be parsed.");
    return void writeRaw(socket, refusal.toResponse());
  }
  const upgrade = handler.takeUpgrade(answer);
  if (!upgrade) return void writeRaw(socket, answer);
  if (socket.destroyed) return upgrade.abandon();
  upgrades.set(request, upgrade);
  sockets.handleUpgrade(request, socket, head, (ws) => {
    ws.binaryType = "arraybuffer";
    const events = upgrade.attach(serverSocket(ws));
    ws.on("message", (data: ArrayBuffer, binary) => events.message(binary ? data : new TextDecoder().decode(data)));
    // ws says "close" once the TCP connection has ended too; Cloudflare tells a Durable Object
    // when the peer's close frame arrives, and the core counts on that order (an agent's clean
    // stop is seen before the hello of its next connection). ws's receiver says that moment
    // ("conclude"); the later "close" then finds the link ended.
    (ws as unknown as { _receiver?: EventEmitter })._receiver?.once("conclude", (code: number, reason: Buffer) =>
      events.closed(code, reason.toString()),
    );
    ws.on("close", (code, reason) => events.closed(code, reason.toString()));
    ws.on("error", (error) => events.errored(error));
  });
}

function serverSocket(ws: WebSocket) {
  return {
    send: (message: string | Uint8Array) => ws.send(message),
    close: (code: number, reason: string) => ws.close(code, reason),
    terminate: () => ws.terminate(),
    bufferedAmount: () => ws.bufferedAmount,
  };
}

/** A response to an upgrade request that is not an upgrade (an error page): written by hand, then the connection ends. */
async function writeRaw(socket: Socket, response: Response): Promise<void> {
  const body = new Uint8Array(await response.arrayBuffer());
  const lines = [`HTTP/1.1 ${response.status} ${response.statusText || http.STATUS_CODES[response.status] || ""}`];
  for (const [name, value] of response.headers) if (name !== "content-length") lines.push(`${name}: ${value}`);
  lines.push(`content-length: ${body.byteLength}`, "connection: close", "", "");
  socket.end(Buffer.concat([Buffer.from(lines.join("\r\n")), body]));
}
