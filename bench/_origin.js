// The benchmark's origin: a fast node:http server in its own process, so the load generator
// does not share its event loop. Usage: node bench/_origin.js; prints "listening <port>".
import http from "node:http";
import { WebSocketServer } from "ws";

const CHUNK = Buffer.alloc(1024 * 1024, 120);
const SMALL = "ok: a small response from the origin\n";

const server = http.createServer((request, response) => {
  const [, route, arg] = (request.url ?? "/").split("/");
  if (route === "small") {
    response.writeHead(200, { "content-type": "text/plain", "content-length": SMALL.length });
    response.end(SMALL);
  } else if (route === "bytes") {
    const size = Number(arg);
    response.writeHead(200, { "content-type": "application/octet-stream", "content-length": size });
    let sent = 0;
    const write = () => {
      while (sent < size) {
        const chunk = CHUNK.subarray(0, Math.min(CHUNK.length, size - sent));
        sent += chunk.length;
        if (!response.write(chunk)) return void response.once("drain", write);
      }
      response.end();
    };
    write();
  } else if (route === "sink") {
    let length = 0;
    request.on("data", (chunk) => {
      length += chunk.length;
    });
    request.on("end", () => {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ length }));
    });
  } else if (route === "sse") {
    response.writeHead(200, { "content-type": "text/event-stream" });
    response.end("data: first\n\n");
  } else {
    response.writeHead(404);
    response.end();
  }
});
server.keepAliveTimeout = 60_000;
const sockets = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false });
sockets.on("connection", (ws) => ws.on("message", (data, binary) => ws.send(data, { binary })));
server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
