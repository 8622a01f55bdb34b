// The TCP bench's byte service, in its own process so that the client measuring does not share
// its event loop. A connection starts with one line: "sink <n>" (the service reads n bytes, then
// answers "got <n>\n") or "source <n>" (it writes n bytes, then closes). Neither waits for the
// client's half-close, which a path need not carry. Usage: node bench/_tcp-origin.js; prints
// "listening <port>".
import net from "node:net";

const CHUNK = Buffer.alloc(1024 * 1024, 120);
/** "source 1073741824\n" and the like; a longer first line is not a client of ours. */
const MAX_LINE = 64;

const server = net.createServer((socket) => {
  socket.on("error", () => {});
  let head = Buffer.alloc(0);
  const readLine = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf(10);
    if (end < 0) {
      if (head.length > MAX_LINE) socket.destroy();
      return;
    }
    socket.off("data", readLine);
    const [command, arg] = head.subarray(0, end).toString("latin1").split(" ");
    const size = Number(arg);
    if (!Number.isSafeInteger(size) || size < 0) return void socket.destroy();
    if (command === "sink") sink(socket, size, head.length - end - 1);
    else if (command === "source") source(socket, size);
    else socket.destroy();
  };
  socket.on("data", readLine);
});

function sink(socket, size, already) {
  let length = already;
  const check = () => {
    if (length < size) return;
    socket.off("data", count);
    socket.end(`got ${length}\n`);
  };
  const count = (chunk) => {
    length += chunk.length;
    check();
  };
  socket.on("data", count);
  check();
}

function source(socket, size) {
  let sent = 0;
  const write = () => {
    while (sent < size) {
      const chunk = CHUNK.subarray(0, Math.min(CHUNK.length, size - sent));
      sent += chunk.length;
      if (!socket.write(chunk)) return void socket.once("drain", write);
    }
    socket.end();
  };
  write();
}

server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
