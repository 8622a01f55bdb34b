import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { type WebSocket, WebSocketServer } from "ws";
import { blob, pattern, sha256 } from "./_bytes.ts";

export { blob, sha256 } from "./_bytes.ts";

/**
 * A real local server, as a user's app would be. Routes:
 * - /echo: JSON of method, url, headers and the sha256 and length of the body it read
 * - /mirror: streams the request body back
 * - /bytes/<n>: n bytes of BLOB, with Content-Length
 * - /status/<code>, /redirect, /cookies, /gzip, /hop (hop-by-hop response fields)
 * - /hang: never answers; /truncate: promises 100000 bytes, sends 1000 and dies
 * - /pattern/<n>: n bytes of the repeating test pattern, written as fast as the socket drains
 * - /sink?rate=<bytes per second>: reads the body that slowly, answers its length and sha256
 * - /sse?count=<n>&interval=<ms>: a text/event-stream of n events `data: <i>` (i from 1), one
 *   every interval ms (the first at once), then the end
 * WebSockets (any path under /ws/; other upgrades get a 403; subprotocol chat.v2 is chosen):
 * - /ws/echo: sends every message back as it came (text or binary)
 * - /ws/hash: answers each message with "<type> <length> <sha256>", and "send <n>" with n bytes
 * - /ws/headers: sends the handshake's headers as JSON, then echoes
 * - /ws/close?code=&reason=: closes with that code and reason after the first message
 */
export class Origin {
  readonly requests: http.IncomingMessage[] = [];
  /** Every WebSocket the origin accepted, in order. */
  readonly sockets: WebSocket[] = [];
  private readonly routes = new Map<string, http.RequestListener>();
  private constructor(private readonly server: http.Server) {}

  /** Listens on 127.0.0.1:`port` (0: any free port). */
  static async start(port = 0): Promise<Origin> {
    const server = http.createServer((request, response) => {
      const route = origin.routes.get(new URL(`http://origin${request.url}`).pathname);
      (route ?? handle)(request, response);
    });
    server.keepAliveTimeout = 60_000;
    const origin = new Origin(server);
    const sockets = new WebSocketServer({
      noServer: true,
      maxPayload: 64 * 1024 * 1024,
      handleProtocols: (offered) => (offered.has("chat.v2") ? "chat.v2" : false),
    });
    server.on("upgrade", (request, socket, head) => {
      if (!request.url?.startsWith("/ws/")) {
        socket.end("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nforbidden");
        return;
      }
      sockets.handleUpgrade(request, socket, head, (ws) => {
        origin.sockets.push(ws);
        serveSocket(ws, request);
      });
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    server.on("request", (request) => origin.requests.push(request));
    return origin;
  }

  /** Serves `path` with `handler` (for tests that drive the origin step by step). */
  route(path: string, handler: http.RequestListener): void {
    this.routes.set(path, handler);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function handle(request: http.IncomingMessage, response: http.ServerResponse): void {
  const url = new URL(`http://origin${request.url}`); // not new URL(url, base): "//x/y" would name a host
  const [, route, arg] = url.pathname.split("/");
  switch (route) {
    case "echo": {
      const hash = createHash("sha256");
      let length = 0;
      request.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
      });
      request.on("end", () => {
        const body = {
          method: request.method,
          url: request.url,
          headers: request.headers,
          rawHeaders: request.rawHeaders,
          length,
          sha256: hash.digest("hex"),
        };
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify(body));
      });
      return;
    }
    case "mirror":
      response.setHeader("content-type", "application/octet-stream");
      request.pipe(response);
      return;
    case "bytes": {
      const size = Number(arg);
      response.writeHead(200, { "content-type": "application/octet-stream", "content-length": size });
      response.end(blob(size));
      return;
    }
    case "status": {
      response.statusCode = Number(arg);
      response.end(Number(arg) === 204 || Number(arg) === 304 ? undefined : `status ${arg}`);
      return;
    }
    case "redirect":
      response.writeHead(302, { location: "/target?from=redirect" });
      response.end();
      return;
    case "cookies":
      response.setHeader("set-cookie", ["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"]);
      response.end("two cookies");
      return;
    case "gzip":
      response.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" });
      response.end(gzipSync("compressed hello ".repeat(100)));
      return;
    case "hop":
      response.writeHead(200, {
        connection: "keep-alive, x-origin-hop",
        "x-origin-hop": "1",
        "keep-alive": "timeout=5",
        "x-end": "kept",
      });
      response.end("hop");
      return;
    case "pattern": {
      const chunks = pattern(Number(arg));
      response.writeHead(200, { "content-type": "application/octet-stream", "content-length": Number(arg) });
      const write = () => {
        for (let next = chunks.next(); !next.done; next = chunks.next()) {
          if (!response.write(next.value)) return void response.once("drain", write);
        }
        response.end();
      };
      write();
      return;
    }
    case "sink": {
      const rate = Number(url.searchParams.get("rate") ?? Number.POSITIVE_INFINITY);
      const hash = createHash("sha256");
      let length = 0;
      const started = performance.now();
      request.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
        const due = (length / rate) * 1000 - (performance.now() - started);
        if (due > 5) {
          request.pause();
          setTimeout(() => request.resume(), due);
        }
      });
      request.on("end", () => {
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify({ length, sha256: hash.digest("hex") }));
      });
      return;
    }
    case "sse": {
      const count = Number(url.searchParams.get("count") ?? 5);
      const interval = Number(url.searchParams.get("interval") ?? 200);
      response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      let sent = 0;
      const send = () => {
        if (response.destroyed) return;
        response.write(`data: ${++sent}\n\n`);
        if (sent >= count) response.end();
        else setTimeout(send, interval);
      };
      send();
      return;
    }
    case "hang":
      request.resume();
      return;
    case "truncate":
      response.writeHead(200, { "content-length": 100_000 });
      response.write(blob(1000));
      setTimeout(() => response.socket?.destroy(), 50);
      return;
    default:
      response.statusCode = 404;
      response.end("no such route");
  }
}

function serveSocket(ws: WebSocket, request: http.IncomingMessage): void {
  const url = new URL(`http://origin${request.url}`);
  const route = url.pathname.slice("/ws/".length);
  if (route === "headers") ws.send(JSON.stringify(request.headers));
  ws.on("message", (data: Buffer, binary: boolean) => {
    switch (route) {
      case "hash": {
        const text = binary ? "" : data.toString();
        if (text.startsWith("send ")) ws.send(blob(Number(text.slice(5))), { binary: true });
        else ws.send(`${binary ? "binary" : "text"} ${data.length} ${sha256(data)}`);
        return;
      }
      case "close":
        ws.close(Number(url.searchParams.get("code")), url.searchParams.get("reason") ?? "");
        return;
      default:
        ws.send(data, { binary });
    }
  });
}
