// Transfers through a TCP path to the byte service (bench/_tcp-origin.js), timed client-side
// from the connect to the last byte (down) or to the service's count (up): MB/s (10^6 bytes).
import net from "node:net";

/** A path that stays silent this long has stalled: the bench fails rather than wait forever. */
const STALL_MS = 30_000;
const CHUNK = Buffer.alloc(1024 * 1024, 121);

/** Connects to 127.0.0.1:`port` and runs `use` with the socket; rejects on error, close or a stall. */
function connection(port: number, use: (socket: net.Socket, done: (mbps: number) => void) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let settled = false;
    const settle = (error: Error | undefined, mbps = 0) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (error) reject(error);
      else resolve(mbps);
    };
    socket.setTimeout(STALL_MS, () => settle(new Error(`nothing moved through port ${port} for ${STALL_MS / 1000} s`)));
    socket.on("error", (error) => settle(error));
    socket.on("close", () => settle(new Error(`port ${port} closed the connection before the transfer's end`)));
    use(socket, (mbps) => settle(undefined, mbps));
  });
}

/** Asks the service for `size` bytes and reads them all. */
export function tcpDownload(port: number, size: number): Promise<number> {
  const started = performance.now();
  return connection(port, (socket, done) => {
    let length = 0;
    socket.write(`source ${size}\n`);
    socket.on("data", (chunk: Buffer) => {
      length += chunk.length;
      if (length >= size) done(size / 1e6 / ((performance.now() - started) / 1000));
    });
  });
}

/** Sends the service `size` bytes and waits for its count of them. */
export function tcpUpload(port: number, size: number): Promise<number> {
  const started = performance.now();
  return connection(port, (socket, done) => {
    let answer = "";
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString("latin1");
      if (!answer.endsWith("\n")) return;
      if (answer !== `got ${size}\n`) socket.destroy(new Error(`upload: the sink answered ${JSON.stringify(answer)}`));
      else done(size / 1e6 / ((performance.now() - started) / 1000));
    });
    socket.write(`sink ${size}\n`);
    let sent = 0;
    const write = () => {
      while (sent < size) {
        const piece = CHUNK.subarray(0, Math.min(CHUNK.length, size - sent));
        sent += piece.length;
        if (!socket.write(piece)) return void socket.once("drain", write);
      }
    };
    write();
  });
}
