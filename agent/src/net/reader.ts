import type { Duplex } from "node:stream";

/**
 * Pull-style reads from a socket, for the parts of the protocol that are read step by step: a
 * proxy's CONNECT answer, the WebSocket handshake, HTTP responses. Bytes are kept as they
 * arrive and copied once when taken.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.wake?.();
  };
  private readonly onError = (error: Error) => {
    this.failure ??= error;
    this.wake?.();
  };

  constructor(private readonly socket: Duplex) {
    socket.on("data", this.onData);
    socket.on("end", this.onEnd);
    socket.on("close", this.onEnd);
    socket.on("error", this.onError);
  }

  /**
   * Reads through the first `\r\n\r\n` and returns the text before it.
   * @throws when the peer closes first or sends more than `max` bytes without one.
   */
  async head(max = 64 * 1024): Promise<string> {
    for (;;) {
      const all = this.peek();
      const at = all.indexOf("\r\n\r\n");
      if (at >= 0) {
        this.take(at + 4);
        return all.subarray(0, at).toString("latin1");
      }
      if (all.byteLength > max) throw new Error(`the answer's header is larger than ${max} bytes`);
      await this.more();
    }
  }

  /** Reads up to and including the next CRLF and returns the line without it. */
  async line(max = 4096): Promise<string> {
    for (;;) {
      const all = this.peek();
      const at = all.indexOf("\r\n");
      if (at >= 0) {
        this.take(at + 2);
        return all.subarray(0, at).toString("latin1");
      }
      if (all.byteLength > max) throw new Error(`a line longer than ${max} bytes`);
      await this.more();
    }
  }

  /** Reads exactly `n` bytes. */
  async exactly(n: number): Promise<Buffer> {
    while (this.buffered < n) await this.more();
    return this.take(n);
  }

  /** Reads until the peer closes, at most `max` bytes. */
  async rest(max: number): Promise<Buffer> {
    while (!this.ended && !this.failure && this.buffered <= max) await this.more().catch(() => undefined);
    if (this.buffered > max) throw new Error(`a body larger than ${max} bytes`);
    return this.take(this.buffered);
  }

  /** Stops reading and hands back whatever was read but not taken. */
  release(): Buffer {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onEnd);
    this.socket.off("close", this.onEnd);
    this.socket.off("error", this.onError);
    return this.take(this.buffered);
  }

  private peek(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  private take(n: number): Buffer {
    const all = this.peek();
    const taken = all.subarray(0, n);
    this.chunks = n < all.byteLength ? [all.subarray(n)] : [];
    this.buffered -= n;
    return taken;
  }

  private more(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.reject(new Error("the connection closed"));
    return new Promise((resolve) => {
      this.wake = () => {
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/**
 * Reads and discards the body of the answer `head` (Content-Length or chunked), to use the
 * connection again.
 * @returns false when the body is larger than `max` bytes or runs until the connection closes:
 *   the connection cannot be used again.
 */
export async function skipBody(reader: SocketReader, head: Head, max: number): Promise<boolean> {
  if (/\bchunked\b/i.test(head.headers.get("transfer-encoding") ?? "")) {
    let total = 0;
    for (;;) {
      const size = Number.parseInt((await reader.line()).split(";", 1)[0]!.trim(), 16);
      if (!Number.isInteger(size) || size < 0) return false;
      if (size === 0) break;
      total += size;
      if (total > max) return false;
      await reader.exactly(size + 2);
    }
    while ((await reader.line()) !== ""); // trailer fields, if any
    return true;
  }
  const length = head.headers.get("content-length");
  if (length === undefined) return head.status === 204 || head.status === 304;
  const size = Number(length);
  if (!/^\d+$/.test(length.trim()) || size > max) return false;
  await reader.exactly(size);
  return true;
}

/** An HTTP/1.1 status line and header block. */
export interface Head {
  status: number;
  statusText: string;
  headers: Map<string, string>;
  /** Each field's values apart, in order: a list field whose values may hold commas (Proxy-Authenticate). */
  lists: Map<string, string[]>;
}

/** Parses `HTTP/1.1 200 OK\r\nName: value...` (names lowercased, repeated fields joined). */
export function parseHead(text: string): Head {
  const [statusLine = "", ...lines] = text.split("\r\n");
  const match = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
  if (!match) throw new Error(`not an HTTP answer: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const headers = new Map<string, string>();
  const lists = new Map<string, string[]>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    lists.set(name, [...(lists.get(name) ?? []), value]);
  }
  return { status: Number(match[1]), statusText: match[2] ?? "", headers, lists };
}
