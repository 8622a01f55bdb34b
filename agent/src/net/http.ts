import type { Duplex } from "node:stream";
import { type DialReport, dial, type NetConfig, withTimeout } from "./dial.ts";
import { type Head, parseHead, SocketReader } from "./reader.ts";

export interface HttpResponse extends Head {
  body: Buffer;
}

/**
 * One keep-alive HTTP/1.1 connection to the relay, over the same dial (proxy, TLS) as the
 * WebSocket transport: requests one at a time, bodies with Content-Length, answers with
 * Content-Length, chunked, or until close. Enough for the HTTPS transport, nothing more.
 */
export class HttpConnection {
  private closed = false;

  private constructor(
    private readonly socket: Duplex,
    private readonly reader: SocketReader,
    private readonly host: string,
  ) {
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", () => {
      this.closed = true;
    });
  }

  static async open(target: URL, config: NetConfig, report?: DialReport): Promise<HttpConnection> {
    const socket = await dial(target, config, report);
    return new HttpConnection(socket, new SocketReader(socket), target.host);
  }

  get usable(): boolean {
    return !this.closed;
  }

  /**
   * Sends one request and reads the whole answer (at most `maxBody` bytes).
   * @throws {Error} when the connection fails or the answer takes longer than `timeoutMs`.
   */
  async request(
    method: string,
    path: string,
    options: { headers?: Record<string, string>; body?: Uint8Array; timeoutMs: number; maxBody: number },
  ): Promise<HttpResponse> {
    const body = options.body ?? new Uint8Array(0);
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${this.host}`, "User-Agent: burrow-agent", "Cache-Control: no-store"];
    for (const [name, value] of Object.entries(options.headers ?? {})) lines.push(`${name}: ${value}`);
    if (method !== "GET" || body.byteLength > 0) lines.push(`Content-Length: ${body.byteLength}`);
    // One write for head and body: one segment (and one read for the relay) for a small POST.
    this.socket.cork();
    this.socket.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (body.byteLength > 0) this.socket.write(body);
    this.socket.uncork();
    try {
      return await withTimeout(
        this.response(method, options.maxBody),
        options.timeoutMs,
        `no answer within ${options.timeoutMs / 1000}s`,
      );
    } catch (error) {
      this.close();
      throw error;
    }
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private async response(method: string, maxBody: number): Promise<HttpResponse> {
    const head = parseHead(await this.reader.head());
    let body: Buffer;
    const length = head.headers.get("content-length");
    if (method === "HEAD" || head.status === 204 || head.status === 304) {
      body = Buffer.alloc(0);
    } else if (/\bchunked\b/i.test(head.headers.get("transfer-encoding") ?? "")) {
      body = await this.chunked(maxBody);
    } else if (length !== undefined) {
      const n = Number(length);
      if (!(n >= 0) || n > maxBody) throw new Error(`an answer of ${length} bytes; the limit is ${maxBody}`);
      body = await this.reader.exactly(n);
    } else {
      body = await this.reader.rest(maxBody);
      this.closed = true;
    }
    if (/\bclose\b/i.test(head.headers.get("connection") ?? "")) this.close();
    return { ...head, body };
  }

  private async chunked(maxBody: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const size = Number.parseInt(await this.reader.line(), 16);
      if (!(size >= 0)) throw new Error("a malformed chunked body");
      if (size === 0) {
        while ((await this.reader.line()) !== "");
        return Buffer.concat(parts, total);
      }
      total += size;
      if (total > maxBody) throw new Error(`an answer larger than ${maxBody} bytes`);
      parts.push(await this.reader.exactly(size));
      await this.reader.line();
    }
  }
}
