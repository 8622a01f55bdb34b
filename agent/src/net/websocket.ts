import { createHash, randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { NetworkError } from "./dial.ts";
import { parseHead, SocketReader } from "./reader.ts";

/** A message-oriented connection to the relay, whichever transport carries it. */
export interface Link {
  /**
   * Binary messages are protocol frames, given whole or as parts to send as one message; text
   * is a heartbeat (transports without one ignore it).
   */
  send(message: Uint8Array | Uint8Array[] | string): void;
  close(code: number, reason: string): void;
  onmessage: (message: Uint8Array | string) => void;
  /** Called once, however the link ended. */
  onclose: (code: number, reason: string) => void;
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Largest message accepted from the relay: far above the protocol's own 1 MiB limit. */
const MAX_INBOUND = 4 * 1024 * 1024;

/**
 * The WebSocket upgrade was answered with something other than 101: a proxy that blocks
 * WebSockets, or one that stripped the Upgrade header so the relay saw a plain GET. The
 * HTTPS transport gets through where this does not.
 */
export class UpgradeRefused extends NetworkError {
  constructor(message: string) {
    super("websocket", message, "the agent falls back to its HTTPS transport by itself (--transport auto)", false);
  }
}

/**
 * Performs the client handshake on `socket` (already connected, through TLS when wss) and
 * returns the open WebSocket. One implementation on Node, Bun and Deno, over the same socket
 * the proxy and TLS steps produced.
 * @throws {UpgradeRefused} when the answer is not a valid 101.
 */
export async function openWebSocket(socket: Duplex, url: URL, timeoutMs: number): Promise<WebSocketLink> {
  const key = randomBytes(16).toString("base64");
  const request = [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    "User-Agent: burrow-agent",
  ];
  socket.write(`${request.join("\r\n")}\r\n\r\n`);
  const reader = new SocketReader(socket);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const head = parseHead(
      await Promise.race([
        reader.head(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer to the upgrade within ${timeoutMs / 1000}s`)), timeoutMs);
        }),
      ]),
    );
    if (head.status !== 101) {
      const length = Number(head.headers.get("content-length") ?? 0);
      const body = length > 0 && length < 4096 ? (await reader.exactly(length)).toString("utf8").trim() : "";
      const fromRelay = head.headers.has("x-burrow-error");
      const who = fromRelay ? "the relay" : "something between the agent and the relay (a proxy?)";
      const detail = body ? `: ${body.split("\n")[0]!.slice(0, 200)}` : "";
      const why =
        fromRelay && head.status === 426
          ? "the relay received the request without its Upgrade header (a proxy stripped it)"
          : `${who} answered ${head.status} ${head.statusText}${detail}`;
      if (fromRelay && head.status !== 426) {
        throw new NetworkError(
          "websocket",
          `the relay refused the connection: ${head.status} ${head.statusText}${detail}`,
          "",
          false,
        );
      }
      throw new UpgradeRefused(`the WebSocket upgrade was refused: ${why}`);
    }
    const accept = createHash("sha1")
      .update(key + GUID)
      .digest("base64");
    if (head.headers.get("sec-websocket-accept") !== accept) {
      throw new UpgradeRefused("the WebSocket handshake was answered with a wrong Sec-WebSocket-Accept (a proxy interfered)");
    }
  } catch (error) {
    socket.destroy();
    if (error instanceof NetworkError) throw error;
    throw new UpgradeRefused(`the WebSocket upgrade failed: ${(error as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  return new WebSocketLink(socket, reader.release());
}

enum Opcode {
  Continuation = 0,
  Text = 1,
  Binary = 2,
  Close = 8,
  Ping = 9,
  Pong = 10,
}

/** RFC 6455 framing over a socket: client side, so every frame sent is masked. */
export class WebSocketLink implements Link {
  onmessage: (message: Uint8Array | string) => void = () => {};
  onclose: (code: number, reason: string) => void = () => {};
  private chunks: Buffer[] = [];
  private buffered = 0;
  private needed = 2;
  private fragments: Buffer[] = [];
  private fragmentsType: Opcode = Opcode.Binary;
  private closeSent = false;
  private finished = false;

  constructor(
    private readonly socket: Duplex,
    early: Buffer,
  ) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("error", (error: Error) => this.finish(1006, error.message));
    socket.on("close", () => this.finish(1006, "the connection closed"));
    // Bytes that came with the handshake answer go first, once the caller has set its handlers.
    if (early.byteLength > 0) {
      this.chunks.push(early);
      this.buffered = early.byteLength;
      setImmediate(() => this.receive(Buffer.alloc(0)));
    }
  }

  send(message: Uint8Array | Uint8Array[] | string): void {
    if (this.closeSent || this.finished) return;
    if (typeof message === "string") this.write(Opcode.Text, [Buffer.from(message)]);
    else this.write(Opcode.Binary, Array.isArray(message) ? message : [message]);
  }

  close(code: number, reason: string): void {
    if (this.closeSent || this.finished) return;
    const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
    payload.writeUInt16BE(code, 0);
    payload.write(reason, 2);
    this.write(Opcode.Close, [payload]);
    this.closeSent = true;
    // The relay answers with its own close frame; a silent one does not hold us.
    setTimeout(() => this.socket.destroy(), 2000).unref?.();
  }

  /** Sends one frame whose payload is `parts` joined: copied once, into the masked frame. */
  private write(opcode: Opcode, parts: Uint8Array[]): void {
    let length = 0;
    for (const part of parts) length += part.byteLength;
    const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8;
    const headerSize = 2 + lengthBytes + 4;
    // The payload starts at a multiple of 4 so the mask is applied a 32-bit word at a time.
    const start = 16;
    const frame = Buffer.allocUnsafeSlow(start + length);
    const head = start - headerSize;
    frame[head] = 0x80 | opcode;
    if (lengthBytes === 0) frame[head + 1] = 0x80 | length;
    else if (lengthBytes === 2) {
      frame[head + 1] = 0x80 | 126;
      frame.writeUInt16BE(length, head + 2);
    } else {
      frame[head + 1] = 0x80 | 127;
      frame.writeUInt32BE(0, head + 2);
      frame.writeUInt32BE(length, head + 6);
    }
    const mask = randomBytes(4);
    mask.copy(frame, start - 4);
    let offset = start;
    for (const part of parts) {
      frame.set(part, offset);
      offset += part.byteLength;
    }
    const words = length >>> 2;
    const view = new Uint32Array(frame.buffer, frame.byteOffset + start, words);
    const word = mask.readUInt32LE(0);
    for (let i = 0; i < words; i++) view[i]! ^= word;
    for (let i = words << 2; i < length; i++) frame[start + i]! ^= mask[i & 3]!;
    this.socket.write(frame.subarray(head));
  }

  private receive(chunk: Buffer): void {
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.byteLength;
    }
    // Chunks are joined only once a whole frame (or header) is there: no copy per TCP segment.
    while (!this.finished && this.buffered >= this.needed) {
      const buffer = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
      this.chunks = [buffer];
      const fin = (buffer[0]! & 0x80) !== 0;
      const opcode = (buffer[0]! & 0x0f) as Opcode;
      if ((buffer[1]! & 0x80) !== 0) {
        this.fail(1002, "the relay sent a masked frame");
        return;
      }
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length >= 126) {
        offset = length === 126 ? 4 : 10;
        if (buffer.byteLength < offset) {
          this.needed = offset;
          return;
        }
        length = length === 126 ? buffer.readUInt16BE(2) : buffer.readUInt32BE(2) * 2 ** 32 + buffer.readUInt32BE(6);
      }
      if (length > MAX_INBOUND) {
        this.fail(1009, `a frame of ${length} bytes exceeds ${MAX_INBOUND}`);
        return;
      }
      if (buffer.byteLength < offset + length) {
        this.needed = offset + length;
        return;
      }
      const payload = buffer.subarray(offset, offset + length);
      const rest = buffer.subarray(offset + length);
      this.chunks = rest.byteLength > 0 ? [rest] : [];
      this.buffered = rest.byteLength;
      this.needed = 2;
      this.frame(fin, opcode, payload);
    }
  }

  private frame(fin: boolean, opcode: Opcode, payload: Buffer): void {
    switch (opcode) {
      case Opcode.Ping:
        this.write(Opcode.Pong, [payload]);
        return;
      case Opcode.Pong:
        return;
      case Opcode.Close: {
        const code = payload.byteLength >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.subarray(2).toString("utf8");
        if (!this.closeSent) {
          this.write(Opcode.Close, [payload.subarray(0, 2)]);
          this.closeSent = true;
        }
        this.socket.end();
        this.finish(code, reason);
        return;
      }
      case Opcode.Continuation:
      case Opcode.Text:
      case Opcode.Binary: {
        if (opcode !== Opcode.Continuation) this.fragmentsType = opcode;
        if (!fin) {
          this.fragments.push(Buffer.from(payload));
          if (this.fragments.reduce((n, f) => n + f.byteLength, 0) > MAX_INBOUND) this.fail(1009, "message too large");
          return;
        }
        let whole: Buffer = payload;
        if (this.fragments.length > 0) {
          whole = Buffer.concat([...this.fragments, payload]);
          this.fragments = [];
        }
        // The payload is a view of the receive buffer, which is not reused: safe to hand out.
        this.onmessage(
          this.fragmentsType === Opcode.Text
            ? whole.toString("utf8")
            : new Uint8Array(whole.buffer, whole.byteOffset, whole.byteLength),
        );
        return;
      }
      default:
        this.fail(1002, `unknown opcode ${opcode}`);
    }
  }

  private fail(code: number, reason: string): void {
    this.close(code, reason);
    this.socket.destroy();
    this.finish(code, reason);
  }

  private finish(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.socket.destroy();
    this.onclose(code, reason);
  }
}
