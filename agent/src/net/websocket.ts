import { createHash, randomBytes, randomFillSync } from "node:crypto";
import type { Duplex } from "node:stream";
import { BATCH_FLUSH_BYTES, closeReason, MAX_DATA_CHUNK } from "@burrow/protocol";
import { NetworkError } from "./dial.ts";
import { maskPayload } from "./mask.ts";
import { parseHead, SocketReader } from "./reader.ts";

/** A message-oriented connection to the relay, whichever transport carries it. */
export interface RelayLink {
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
/** How long a close waits for the peer's close frame (and its end of TCP) before the socket is destroyed. */
export const CLOSE_TIMEOUT_MS = 3000;

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

const Opcode = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;

/**
 * Whether `code` may travel in a close frame, as websockets/ws's `isValidStatusCode` judges it
 * (RFC 6455 7.4): 1004-1006 and 1015 are reserved or local-only, 1016-2999 are unassigned, and
 * 3000-4999 belong to libraries and applications.
 */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The text of `bytes`, or undefined when they are not valid UTF-8 (RFC 6455 8.1). */
function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** A violation of RFC 6455 by the peer: the connection fails with `code`. */
class FrameError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * RFC 6455 framing over a socket, client side: every frame sent is masked, and every frame
 * received is held to the RFC as websockets/ws's receiver holds it. A violation fails the
 * connection with the code ws would use (1002, 1007, 1009): a close frame, then the end.
 */
export class WebSocketLink implements RelayLink {
  onmessage: (message: Uint8Array | string) => void = () => {};
  onclose: (code: number, reason: string) => void = () => {};
  private chunks: Buffer[] = [];
  private buffered = 0;
  private needed = 2;
  /** The data frames of the message being received, and their total size; opcode 0 when none is open. */
  private fragments: Buffer[] = [];
  private fragmentsBytes = 0;
  private fragmentsType: number = Opcode.Continuation;
  private closeSent = false;
  /** A close frame came, or the peer broke the protocol: whatever follows is ignored. */
  private receiving = true;
  private finished = false;
  private closeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Frame buffers of POOLED_FRAME_BYTES whose writes completed (see write). */
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly socket: Duplex,
    early: Buffer,
  ) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("error", (error: Error) => {
      socket.destroy();
      this.finish(1006, error.message);
    });
    socket.on("close", () => {
      clearTimeout(this.closeTimer);
      this.finish(1006, "the connection closed");
    });
    // Bytes that came with the handshake answer go first, once the caller has set its handlers.
    if (early.byteLength > 0) {
      this.chunks.push(early);
      this.buffered = early.byteLength;
      setImmediate(() => this.receive(Buffer.alloc(0)));
    }
  }

  send(message: Uint8Array | Uint8Array[] | string): void {
    // RFC 6455 5.5.1: no data frame after a close frame.
    if (this.closeSent) return;
    if (typeof message === "string") this.write(Opcode.Text, [Buffer.from(message)]);
    else this.write(Opcode.Binary, Array.isArray(message) ? message : [message]);
  }

  /**
   * Starts the closing handshake: sends a close frame and waits for the peer's, for at most
   * CLOSE_TIMEOUT_MS. `reason` is cut to the 123 bytes a control frame leaves it.
   * @throws {RangeError} when `code` may not be sent (1005, 1006, 1015, below 1000...).
   */
  close(code: number, reason: string): void {
    if (!isValidCloseCode(code)) throw new RangeError(`${code} is not a close code that may be sent`);
    this.sendClose(code, reason);
  }

  private sendClose(code: number | undefined, reason: string): void {
    if (this.closeSent) return;
    this.closeSent = true;
    let payload = Buffer.alloc(0);
    if (code !== undefined) {
      const text = Buffer.from(closeReason(reason));
      payload = Buffer.alloc(2 + text.byteLength);
      payload.writeUInt16BE(code, 0);
      text.copy(payload, 2);
    }
    this.write(Opcode.Close, [payload]);
    // The peer answers with its close frame and then ends TCP (RFC 6455 7.1.1); a silent one
    // does not hold the socket open.
    this.closeTimer = setTimeout(() => {
      this.socket.destroy();
      this.finish(1006, `no close frame from the peer within ${CLOSE_TIMEOUT_MS / 1000}s`);
    }, CLOSE_TIMEOUT_MS);
    this.closeTimer.unref?.();
  }

  /** Sends one frame whose payload is `parts` joined: copied once, into the masked frame. */
  private write(opcode: number, parts: Uint8Array[]): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    let length = 0;
    for (const part of parts) length += part.byteLength;
    const lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8;
    const headerSize = 2 + lengthBytes + 4;
    // The payload starts at a multiple of 4 so the mask is applied a 32-bit word at a time.
    const start = 16;
    // Large frames reuse buffers whose write completed: a fresh 64-256 KiB buffer per message
    // made a download's garbage twice what it carries (the origin's chunks, then their masked
    // copies), and the collector the agent's largest cost after the socket writes.
    const pooled = start + length <= POOLED_FRAME_BYTES && length >= MIN_POOLED_LENGTH;
    const frame = pooled
      ? (this.spare.pop() ?? Buffer.allocUnsafeSlow(POOLED_FRAME_BYTES))
      : Buffer.allocUnsafeSlow(start + length);
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
    const mask = nextMask();
    mask.copy(frame, start - 4);
    let offset = start;
    for (const part of parts) {
      frame.set(part, offset);
      offset += part.byteLength;
    }
    maskPayload(frame, start, length, mask);
    if (!pooled) {
      this.socket.write(frame.subarray(head));
      return;
    }
    // The socket holds the bytes until the write completes; only then may the buffer be reused.
    this.socket.write(frame.subarray(head, start + length), () => {
      if (this.spare.length < MAX_SPARE_FRAMES) this.spare.push(frame);
    });
  }

  private receive(chunk: Buffer): void {
    if (!this.receiving) return;
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.byteLength;
    }
    try {
      // Chunks are joined only once a whole frame (or header) is there: no copy per TCP segment.
      while (this.receiving && this.buffered >= this.needed) {
        const buffer = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
        this.chunks = [buffer];
        const header = this.header(buffer);
        if (!header) return;
        const { fin, opcode, offset, length } = header;
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
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      this.fail(error.code, error.message);
    }
  }

  /**
   * Reads and checks a frame's header, in the order of ws's `getInfo` and `haveLength`. Checked
   * again each time more bytes come for the same frame: it changes nothing.
   * @returns undefined when the header's extended length has not all arrived.
   * @throws {FrameError} for a header RFC 6455 forbids, or a message larger than MAX_INBOUND.
   */
  private header(buffer: Buffer): { fin: boolean; opcode: number; offset: number; length: number } | undefined {
    const fin = (buffer[0]! & 0x80) !== 0;
    const opcode = buffer[0]! & 0x0f;
    // No extension is negotiated (the handshake asks for none), so RSV1-3 must be 0 (RFC 6455 5.2).
    if ((buffer[0]! & 0x70) !== 0) throw new FrameError(1002, "RSV bits must be clear");
    if (opcode === Opcode.Continuation) {
      if (this.fragmentsType === Opcode.Continuation) throw new FrameError(1002, "a continuation with no message open");
    } else if (opcode === Opcode.Text || opcode === Opcode.Binary) {
      if (this.fragmentsType !== Opcode.Continuation) throw new FrameError(1002, "a new message inside a fragmented one");
    } else if (opcode === Opcode.Close || opcode === Opcode.Ping || opcode === Opcode.Pong) {
      // RFC 6455 5.5: control frames are never fragmented and carry at most 125 bytes; a close
      // payload is empty or starts with a 2-byte code (5.5.1).
      if (!fin) throw new FrameError(1002, "a fragmented control frame");
      const short = buffer[1]! & 0x7f;
      if (short > 125 || (opcode === Opcode.Close && short === 1)) {
        throw new FrameError(1002, `a control frame with a ${short > 125 ? "long" : "1-byte"} payload`);
      }
    } else {
      throw new FrameError(1002, `unknown opcode ${opcode}`);
    }
    // RFC 6455 5.1: a server never masks its frames.
    if ((buffer[1]! & 0x80) !== 0) throw new FrameError(1002, "a masked frame from the server");
    let length = buffer[1]! & 0x7f;
    let offset = 2;
    if (length >= 126) {
      offset = length === 126 ? 4 : 10;
      if (buffer.byteLength < offset) {
        this.needed = offset;
        return undefined;
      }
      if (length === 126) length = buffer.readUInt16BE(2);
      else {
        const high = buffer.readUInt32BE(2);
        // RFC 6455 5.2: the most significant bit of a 64-bit length must be 0.
        if (high >= 0x80000000) throw new FrameError(1002, "a 64-bit length with its high bit set");
        length = high * 2 ** 32 + buffer.readUInt32BE(6);
      }
    }
    // The cap is on the message, all fragments together, and is checked before its bytes are held.
    if (opcode < Opcode.Close && this.fragmentsBytes + length > MAX_INBOUND) {
      throw new FrameError(1009, `a message of more than ${MAX_INBOUND} bytes`);
    }
    return { fin, opcode, offset, length };
  }

  private frame(fin: boolean, opcode: number, payload: Buffer): void {
    switch (opcode) {
      case Opcode.Ping:
        // Once our close frame is sent, nothing else is (as ws does): the peer's close is awaited.
        if (!this.closeSent) this.write(Opcode.Pong, [payload]);
        return;
      case Opcode.Pong:
        return;
      case Opcode.Close:
        this.closeFrame(payload);
        return;
      default: {
        if (opcode !== Opcode.Continuation) this.fragmentsType = opcode;
        if (!fin) {
          // The receive buffer is not reused: a view keeps the fragment without a copy.
          this.fragments.push(payload);
          this.fragmentsBytes += payload.byteLength;
          return;
        }
        const type = this.fragmentsType;
        const whole = this.fragments.length > 0 ? Buffer.concat([...this.fragments, payload]) : payload;
        this.fragments = [];
        this.fragmentsBytes = 0;
        this.fragmentsType = Opcode.Continuation;
        if (type === Opcode.Text) {
          const text = decodeUtf8(whole);
          if (text === undefined) throw new FrameError(1007, "a text message that is not UTF-8");
          this.onmessage(text);
        } else this.onmessage(new Uint8Array(whole.buffer, whole.byteOffset, whole.byteLength));
      }
    }
  }

  /** The peer's close frame: answered (if we had not closed first), then TCP is ended. */
  private closeFrame(payload: Buffer): void {
    let code = 1005;
    let reason = "";
    if (payload.byteLength >= 2) {
      code = payload.readUInt16BE(0);
      if (!isValidCloseCode(code)) throw new FrameError(1002, `close code ${code} may not be sent`);
      const text = decodeUtf8(payload.subarray(2));
      if (text === undefined) throw new FrameError(1007, "a close reason that is not UTF-8");
      reason = text;
    }
    this.receiving = false;
    // RFC 6455 5.5.1: echo the code; 1005 means there was none, so the answer has none either.
    this.sendClose(code === 1005 ? undefined : code, "");
    this.socket.end();
    this.finish(code, reason);
  }

  /** RFC 6455 7.1.7: the peer broke the protocol. A close frame says how, then TCP is ended. */
  private fail(code: number, reason: string): void {
    this.receiving = false;
    this.chunks = [];
    this.buffered = 0;
    this.fragments = [];
    this.sendClose(code, reason);
    this.socket.end();
    this.finish(code, reason);
  }

  private finish(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.onclose(code, reason);
  }
}

/**
 * Frames up to this size are built in reused buffers: a full batch (it goes out at
 * BATCH_FLUSH_BYTES, and may hold one more chunk and its frame headers) and the frame's header.
 */
const POOLED_FRAME_BYTES = BATCH_FLUSH_BYTES + MAX_DATA_CHUNK + 1024;
/** Smaller frames are cheap to allocate, and would hold a large buffer each while queued. */
const MIN_POOLED_LENGTH = 16 * 1024;
/** Buffers kept for reuse at most: more are only ever needed while the socket is backed up. */
const MAX_SPARE_FRAMES = 8;

/**
 * Masking keys (RFC 6455 5.3: unpredictable, from a strong source) taken 4 bytes at a time from
 * a pool the CSPRNG refills, as ws does: a randomBytes(4) per frame cost a small request about
 * 14 µs of the agent's CPU (bench/profile.ts).
 */
const maskPool = Buffer.alloc(4096);
let maskOffset = maskPool.byteLength;

function nextMask(): Buffer {
  if (maskOffset === maskPool.byteLength) {
    randomFillSync(maskPool);
    maskOffset = 0;
  }
  maskOffset += 4;
  return maskPool.subarray(maskOffset - 4, maskOffset);
}
