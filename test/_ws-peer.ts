import { createHash } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { openWebSocket, WebSocketLink } from "../agent/src/net/websocket.ts";

/** One frame as the wire carries it, from either side. */
export interface WireFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Buffer;
}

/**
 * A server-side frame, built byte by byte so that anything RFC 6455 forbids can be written too.
 * `length` overrides the length field (to lie, or to pick a longer encoding than needed).
 */
export function frame(
  opcode: number,
  payload: Uint8Array | string = Buffer.alloc(0),
  options: { fin?: boolean; rsv?: number; mask?: boolean; length?: number; encoding?: 7 | 16 | 64 } = {},
): Buffer {
  const body = Buffer.from(payload);
  const length = options.length ?? body.byteLength;
  const encoding = options.encoding ?? (length < 126 ? 7 : length < 65536 ? 16 : 64);
  const head = [((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode];
  const maskBit = options.mask ? 0x80 : 0;
  const extended = Buffer.alloc(encoding === 7 ? 0 : encoding === 16 ? 2 : 8);
  if (encoding === 7) head.push(maskBit | length);
  else if (encoding === 16) {
    head.push(maskBit | 126);
    extended.writeUInt16BE(length);
  } else {
    head.push(maskBit | 127);
    extended.writeBigUInt64BE(BigInt(length));
  }
  if (!options.mask) return Buffer.concat([Buffer.from(head), extended, body]);
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(body.map((byte, i) => byte ^ mask[i & 3]!));
  return Buffer.concat([Buffer.from(head), extended, mask, masked]);
}

/** A close frame's payload: the code, then the reason. */
export function closePayload(code: number, reason: Uint8Array | string = ""): Buffer {
  const payload = Buffer.alloc(2);
  payload.writeUInt16BE(code);
  return Buffer.concat([payload, Buffer.from(reason)]);
}

/** Splits `bytes` into the frames it holds (masked or not); a partial frame at the end stays. */
function parseFrames(bytes: Buffer): { frames: WireFrame[]; rest: Buffer } {
  const frames: WireFrame[] = [];
  let at = 0;
  for (;;) {
    if (bytes.byteLength - at < 2) break;
    const b0 = bytes[at]!;
    const b1 = bytes[at + 1]!;
    let length = b1 & 0x7f;
    let offset = at + 2;
    if (length === 126) {
      if (bytes.byteLength - at < 4) break;
      length = bytes.readUInt16BE(at + 2);
      offset = at + 4;
    } else if (length === 127) {
      if (bytes.byteLength - at < 10) break;
      length = Number(bytes.readBigUInt64BE(at + 2));
      offset = at + 10;
    }
    const masked = (b1 & 0x80) !== 0;
    const end = offset + (masked ? 4 : 0) + length;
    if (bytes.byteLength < end) break;
    const payload = Buffer.from(bytes.subarray(end - length, end));
    if (masked) {
      const mask = bytes.subarray(offset, offset + 4);
      for (let i = 0; i < payload.byteLength; i++) payload[i]! ^= mask[i & 3]!;
    }
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload });
    at = end;
  }
  return { frames, rest: bytes.subarray(at) };
}

/** The server's end of one connection: raw writes out, the client's frames parsed as they come. */
export class PeerSocket {
  readonly frames: WireFrame[] = [];
  /** When the client ended its side of TCP (a FIN), or the connection was destroyed. */
  endedAt: number | undefined;
  readonly ended: Promise<void>;
  private rest: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];

  constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => {
      const parsed = parseFrames(Buffer.concat([this.rest, chunk]));
      this.rest = parsed.rest;
      this.frames.push(...parsed.frames);
      for (const wake of this.waiters.splice(0)) wake();
    });
    // Half-open on purpose: a test sees the client's FIN before it answers (or does not).
    this.ended = new Promise((resolve) => {
      const done = () => {
        this.endedAt ??= performance.now();
        for (const wake of this.waiters.splice(0)) wake();
        resolve();
      };
      socket.on("end", done);
      socket.on("close", done);
    });
    socket.on("error", () => {});
    socket.resume();
  }

  write(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** The client's next frame (by index, counting from the first), or undefined once it ended. */
  async frame(index = this.frames.length): Promise<WireFrame | undefined> {
    while (this.frames.length <= index && this.endedAt === undefined) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.frames[index];
  }

  /** The code of the client's close frame (1005 for an empty one), or undefined when none came. */
  async closeCode(): Promise<number | undefined> {
    for (let i = 0; ; i++) {
      const next = await this.frame(i);
      if (!next) return undefined;
      if (next.opcode === 8) return next.payload.byteLength >= 2 ? next.payload.readUInt16BE(0) : 1005;
    }
  }
}

/** A client link over real TCP and the raw server end of it. */
export interface Pair {
  link: WebSocketLink;
  peer: PeerSocket;
  messages: (Uint8Array | string)[];
  /** What onclose reported, and how many times it was called. */
  closed: Promise<{ code: number; reason: string; at: number }>;
  closeCalls: () => number;
}

/** A `net` server on 127.0.0.1 that hands each connection over as a PeerSocket. */
export class PeerServer {
  private readonly waiting: ((socket: Socket) => void)[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      this.waiting.shift()?.(socket);
    });
  }

  static async start(): Promise<PeerServer> {
    const server = createServer({ allowHalfOpen: true });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return new PeerServer(server);
  }

  get port(): number {
    const address = this.server.address();
    return typeof address === "object" && address ? address.port : 0;
  }

  /** Stops listening and destroys the connections tests left open. */
  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** A WebSocketLink constructed on a connected socket: no handshake, frames from the first byte. */
  async pair(): Promise<Pair> {
    const accepted = new Promise<Socket>((resolve) => this.waiting.push(resolve));
    const client = connect(this.port, "127.0.0.1");
    await once(client, "connect");
    const peer = new PeerSocket(await accepted);
    return wire(new WebSocketLink(client, Buffer.alloc(0)), peer);
  }

  /**
   * The agent's real path: `openWebSocket` sends its upgrade, the server answers a hand-made
   * 101 followed in the same write by `early` (bytes that arrive with the handshake answer).
   */
  async handshake(early: Buffer = Buffer.alloc(0)): Promise<Pair> {
    const accepted = new Promise<Socket>((resolve) => this.waiting.push(resolve));
    const client = connect(this.port, "127.0.0.1");
    await once(client, "connect");
    const server = await accepted;
    const answered = (async () => {
      let request = "";
      while (!request.includes("\r\n\r\n")) {
        const [chunk] = (await once(server, "data")) as [Buffer];
        request += chunk.toString("latin1");
      }
      server.pause(); // the client sends nothing more before the answer; PeerSocket resumes
      const key = /^sec-websocket-key: *(.+)$/im.exec(request)![1]!.trim();
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      const head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
      server.write(Buffer.concat([Buffer.from(head, "latin1"), early]));
    })();
    const link = await openWebSocket(client, new URL(`ws://127.0.0.1:${this.port}/_burrow/connect?name=x`), 5000);
    await answered;
    return wire(link, new PeerSocket(server));
  }
}

function wire(link: WebSocketLink, peer: PeerSocket): Pair {
  const messages: (Uint8Array | string)[] = [];
  let calls = 0;
  link.onmessage = (message) => messages.push(message);
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => {
    link.onclose = (code, reason) => {
      calls++;
      resolve({ code, reason, at: performance.now() });
    };
  });
  return { link, peer, messages, closed, closeCalls: () => calls };
}
