import { connect, type Socket } from "node:net";
import type { HeaderList } from "@burrow/protocol";

// The agent's HTTP/1.1 client for a plain-http origin: keep-alive connections, a request head
// written in one piece, responses parsed as they arrive and handed on without copies. It
// replaces node:http on the hot path (bench/profile.ts put node:http's client, its agent and
// its listeners at 30-60 µs of the agent's CPU per small request); https: origins keep
// node:https. Only what an origin needs: no pipelining, no proxies, no upgrades (the agent's
// WebSockets to the origin go through `ws`).

/** What the origin said, delivered as it arrives (see OriginHandlers). */
export interface ResponseHandlers {
  head(status: number, rawHeaders: string[]): void;
  data(bytes: Uint8Array): void;
  end(): void;
  /** `code`: the socket's (ECONNREFUSED...), "EPROTO" for a malformed response, "ECLOSED" for a close, "EBODY" for body bytes after a head sent without framing for them. */
  fail(code: string, message: string): void;
}

/** One request in flight. */
export interface Exchange {
  write(bytes: Uint8Array, flushed: () => void): void;
  end(): void;
  abort(): void;
  pause(): void;
  resume(): void;
}

/** A response head larger than this is refused (node:http's default is 16 KiB; the protocol allows 256 fields). */
const MAX_RESPONSE_HEAD = 256 * 1024;
/** Connections kept open for reuse at most. */
const MAX_IDLE = 256;
/**
 * How long an idle connection is kept when the origin gives no Keep-Alive timeout: under the
 * 5 s of node:http's and Apache's servers, so that the agent never picks a connection the
 * origin is closing at that moment (a request with a body could not be sent again).
 */
const DEFAULT_IDLE_MS = 4000;
// RFC 9110 section 5.6.2 and 5.5, as the codec's guards check a RequestHead.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^[\x21-\x7e\x80-\xff]+$/;
/** Methods whose requests carry no body unless they say so (node:http's list). */
const BODYLESS = new Set(["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"]);
/**
 * Sent without framing for a body even when their End comes in a later message: the relay
 * refuses a GET or HEAD with a body, and some servers refuse one with Transfer-Encoding.
 */
const NEVER_CHUNKED = new Set(["GET", "HEAD"]);
/** Methods a request of which may go twice (RFC 9110 section 9.2.2): the only ones retried. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
const OWS = /^[ \t]+|[ \t]+$/g;
const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/** A keep-alive pool of connections to one origin. */
export class Http1Client {
  private readonly idle: Socket[] = [];
  /** The listeners that watch an idle connection, to take off when it is used again. */
  private readonly watching = new WeakMap<Socket, () => void>();
  private closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  /**
   * Sends a request; the head goes out in this turn, once the frames that came with it (its
   * End, for most) are known, so that a request without Content-Length is sent chunked only
   * when a body follows.
   * @throws {TypeError} for a method, target or field that would break the request's framing.
   */
  request(method: string, target: string, headers: HeaderList, on: ResponseHandlers): Exchange {
    if (!TOKEN.test(method)) throw new TypeError("the method is not an HTTP token");
    if (!TARGET.test(target)) throw new TypeError("the request target holds spaces or control characters");
    let length: number | undefined;
    for (const [name, value] of headers) {
      if (!TOKEN.test(name)) throw new TypeError(`the header name "${name.slice(0, 80)}" is not an HTTP token`);
      if (!FIELD_VALUE.test(value)) throw new TypeError(`the header "${name.slice(0, 80)}" holds a control character`);
      if (name.length === 14 && name.toLowerCase() === "content-length") {
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) {
          throw new TypeError("the Content-Length is not one whole number");
        }
        length = Number(value);
      }
    }
    return new Request(this, method, target, headers, length, on);
  }

  /** An idle connection, or a new one; `reused` says which. */
  take(): { socket: Socket; reused: boolean } {
    const socket = this.idle.pop();
    if (socket) {
      this.watching.get(socket)?.();
      return { socket, reused: true };
    }
    const fresh = connect({ host: this.host, port: this.port });
    // Node's http turns Nagle's algorithm off for its sockets; Deno's node:net does not, and a
    // small request would then wait ~40 ms for a delayed ACK.
    fresh.once("connect", () => fresh.setNoDelay(true));
    return { socket: fresh, reused: false };
  }

  /**
   * A connection whose exchange ended cleanly, for the next request, for at most `idleMs`
   * (a second under what the origin's Keep-Alive said, like node:http's agent).
   */
  give(socket: Socket, idleMs: number): void {
    if (this.closed || this.idle.length >= MAX_IDLE || socket.destroyed) {
      socket.destroy();
      return;
    }
    // Idle, the origin may close it (its keep-alive timeout) or, wrongly, send bytes: either way it is done.
    const drop = () => {
      socket.destroy();
      const at = this.idle.indexOf(socket);
      if (at >= 0) this.idle.splice(at, 1);
    };
    socket.on("data", drop).on("end", drop).on("error", drop).on("close", drop);
    const expiry = setTimeout(drop, idleMs);
    expiry.unref?.();
    this.watching.set(socket, () => {
      clearTimeout(expiry);
      socket.off("data", drop).off("end", drop).off("error", drop).off("close", drop);
    });
    socket.resume();
    this.idle.push(socket);
  }

  close(): void {
    this.closed = true;
    for (const socket of this.idle.splice(0)) socket.destroy();
  }
}

/** How the response's body ends. */
const Framing = {
  /** With the connection (a response without a length; the connection is not reused). */
  Close: 0,
  Length: 1,
  Chunked: 2,
  None: 3,
} as const;
type Framing = (typeof Framing)[keyof typeof Framing];

/** One exchange on one connection, from the request's head to the response's end. */
class Request implements Exchange {
  private socket!: Socket;
  private reused = false;
  private done = false;
  private headSent = false;
  /** Request body: queued before the head went, written after. */
  private queued: { bytes: Uint8Array; flushed: () => void }[] = [];
  private requestEnded = false;
  private requestChunked = false;
  private requestComplete = false;
  private paused = false;
  // The response parser.
  private received = false;
  private headBuffer: Buffer | undefined;
  private status = 0;
  private framing: Framing = Framing.Close;
  private remaining = 0;
  /** Chunked: reading a size line (or the trailers), else the chunk's data and its CRLF. */
  private chunkState: "size" | "data" | "crlf" | "trailers" = "size";
  private line = "";
  private keepAlive = true;
  /** How long the connection may wait idle for the next request (see give). */
  private idleMs = DEFAULT_IDLE_MS;

  constructor(
    private readonly client: Http1Client,
    private readonly method: string,
    private readonly target: string,
    private readonly headers: HeaderList,
    private readonly length: number | undefined,
    private readonly on: ResponseHandlers,
  ) {
    this.attach();
    queueMicrotask(() => this.sendHead());
  }

  private readonly onData = (chunk: Buffer) => this.receive(chunk);
  private readonly onError = (error: NodeJS.ErrnoException) => this.lost(error.code ?? "ECONNRESET", error.message);
  private readonly onClose = () => this.lost("ECLOSED", "the connection closed");
  // The origin's FIN: on Node the socket closes after it, not on every runtime (Bun's stays open).
  private readonly onEnd = () => this.lost("ECLOSED", "the connection closed");

  private attach(): void {
    const { socket, reused } = this.client.take();
    this.socket = socket;
    this.reused = reused;
    socket.on("data", this.onData).on("error", this.onError).on("close", this.onClose).on("end", this.onEnd);
    if (this.paused) socket.pause();
  }

  /** Takes this exchange's listeners off its connection (only those: node:net has its own). */
  private detach(): void {
    this.socket.off("data", this.onData).off("error", this.onError).off("close", this.onClose).off("end", this.onEnd);
  }

  private sendHead(): void {
    if (this.done || this.headSent) return;
    this.headSent = true;
    let head = `${this.method} ${this.target} HTTP/1.1\r\n`;
    for (const [name, value] of this.headers) head += `${name}: ${value}\r\n`;
    if (this.length === undefined && !NEVER_CHUNKED.has(this.method)) {
      if (!this.requestEnded || this.queued.length > 0) {
        this.requestChunked = true;
        head += "Transfer-Encoding: chunked\r\n";
      } else if (!BODYLESS.has(this.method.toUpperCase())) {
        head += "Content-Length: 0\r\n";
      }
    }
    head += "\r\n";
    this.socket.cork();
    this.socket.write(head, "latin1");
    for (const { bytes, flushed } of this.queued.splice(0)) this.writeBody(bytes, flushed);
    if (this.requestEnded) this.endBody();
    this.socket.uncork();
  }

  write(bytes: Uint8Array, flushed: () => void): void {
    if (this.done || this.requestEnded) return;
    if (!this.headSent) {
      this.queued.push({ bytes, flushed });
      return;
    }
    this.writeBody(bytes, flushed);
  }

  private writeBody(bytes: Uint8Array, flushed: () => void): void {
    if (bytes.byteLength === 0) return void queueMicrotask(flushed);
    if (!this.requestChunked && this.length === undefined) {
      // A head sent without framing for a body: written, these bytes would be another request.
      this.done = true;
      this.socket.destroy();
      this.on.fail("EBODY", "a body came for a request sent without one");
      return;
    }
    if (!this.requestChunked) {
      this.socket.write(bytes, () => flushed());
      return;
    }
    this.socket.cork();
    this.socket.write(`${bytes.byteLength.toString(16)}\r\n`, "latin1");
    this.socket.write(bytes);
    this.socket.write(CRLF, () => flushed());
    this.socket.uncork();
  }

  end(): void {
    if (this.done || this.requestEnded) return;
    this.requestEnded = true;
    if (this.headSent) this.endBody();
  }

  private endBody(): void {
    if (this.requestChunked) this.socket.write(LAST_CHUNK);
    this.requestComplete = true;
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    this.socket.destroy();
  }

  // Once the response is over its connection may be the pool's, or another exchange's: a
  // pause then (the caller's flow control catching up with bytes it still holds) must not
  // stop that connection, or the next request on it would wait forever.
  pause(): void {
    if (this.done) return;
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    if (this.done) return;
    this.paused = false;
    this.socket.resume();
  }

  /** The connection failed or closed before the exchange was over. */
  private lost(code: string, message: string): void {
    if (this.done) return;
    if (this.framing === Framing.Close && this.status >= 200 && code === "ECLOSED") {
      // A response without a length ends with its connection.
      this.finishResponse();
      return;
    }
    // A reused connection the origin had closed meanwhile (its keep-alive timeout): nothing of
    // this request was taken, so it goes again, on the next connection, if it had no body that
    // would be sent twice. A new connection that fails is the origin's answer.
    if (
      this.reused &&
      !this.received &&
      IDEMPOTENT.has(this.method) &&
      this.requestEnded &&
      this.queued.length === 0 &&
      !this.sentBody
    ) {
      this.detach();
      this.socket.on("error", () => {});
      this.socket.destroy();
      this.attach();
      this.headSent = false;
      this.requestComplete = false;
      this.sendHead();
      return;
    }
    this.done = true;
    this.socket.destroy();
    this.on.fail(code, message);
  }

  /** Whether body bytes went on this connection (a retry would send them twice). */
  private get sentBody(): boolean {
    return this.requestChunked || (this.length ?? 0) > 0;
  }

  private malformed(why: string): void {
    if (this.done) return;
    this.done = true;
    this.socket.destroy();
    this.on.fail("EPROTO", `sent a malformed response (${why})`);
  }

  private receive(chunk: Buffer): void {
    if (this.done) return;
    this.received = true;
    let bytes = chunk;
    while (bytes.byteLength > 0 && !this.done) {
      if (this.status === 0) {
        const rest = this.readHead(bytes);
        if (rest === undefined) return;
        bytes = rest;
        continue;
      }
      bytes = this.readBody(bytes);
    }
  }

  /** Takes the response head from `bytes`; returns what follows it, or undefined if more is needed. */
  private readHead(bytes: Buffer): Buffer | undefined {
    const buffer = this.headBuffer ? Buffer.concat([this.headBuffer, bytes]) : bytes;
    const end = buffer.indexOf("\r\n\r\n", Math.max(0, (this.headBuffer?.byteLength ?? 0) - 3), "latin1");
    if (end < 0) {
      if (buffer.byteLength > MAX_RESPONSE_HEAD) this.malformed(`a head of more than ${MAX_RESPONSE_HEAD} bytes`);
      else this.headBuffer = buffer;
      return undefined;
    }
    this.headBuffer = undefined;
    const lines = buffer.toString("latin1", 0, end).split("\r\n");
    const status = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: .*)?$/.exec(lines[0]!);
    if (!status) {
      this.malformed("not an HTTP/1.x status line");
      return undefined;
    }
    const code = Number(status[2]);
    const raw: string[] = [];
    let length: number | undefined;
    let chunked = false;
    let transferCoded = false;
    let close = status[1] === "0";
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const colon = line.indexOf(":");
      const name = colon > 0 ? line.slice(0, colon) : "";
      if (!TOKEN.test(name)) {
        this.malformed("a header line that is not a field");
        return undefined;
      }
      // Optional whitespace is spaces and tabs (RFC 9110 section 5.6.3); trim() would take NBSP too.
      const value = line.slice(colon + 1).replace(OWS, "");
      if (!FIELD_VALUE.test(value)) {
        this.malformed(`a control character in the header "${name.slice(0, 80)}"`);
        return undefined;
      }
      raw.push(name, value);
      switch (name.toLowerCase()) {
        case "content-length": {
          if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) {
            this.malformed("a Content-Length that is not one whole number");
            return undefined;
          }
          length = Number(value);
          break;
        }
        case "transfer-encoding":
          // Chunked must be the last coding (RFC 9112 section 6.1); other codings pass through as the body.
          chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
          transferCoded = true;
          break;
        case "connection":
          if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) close = true;
          else if (status[1] === "0" && /(?:^|,)\s*keep-alive\s*(?:,|$)/i.test(value)) close = false;
          break;
        case "keep-alive": {
          const seconds = /(?:^|,)\s*timeout\s*=\s*(\d+)/i.exec(value);
          if (seconds) this.idleMs = Math.max(0, Number(seconds[1]) * 1000 - 1000);
          break;
        }
      }
    }
    const rest = buffer.subarray(end + 4);
    if (code < 200) {
      // Interim (100 Continue, 103 Early Hints): the final response follows. 101 was never asked for.
      if (code === 101) {
        this.malformed("101 Switching Protocols to a request that asked for no upgrade");
        return undefined;
      }
      return rest;
    }
    // A Transfer-Encoding wins over a Content-Length sent with it (RFC 9112 section 6.3), which
    // is dropped: passed on, it would describe a body the visitor does not get. Without chunked
    // as its last coding, the body ends with the connection.
    if (transferCoded && !chunked) length = undefined;
    if (transferCoded) {
      for (let i = raw.length - 2; i >= 0; i -= 2) if (raw[i]!.toLowerCase() === "content-length") raw.splice(i, 2);
    }
    this.status = code;
    this.keepAlive = !close;
    if (this.method === "HEAD" || code === 204 || code === 304) this.framing = Framing.None;
    else if (chunked) this.framing = Framing.Chunked;
    else if (length !== undefined) {
      this.framing = Framing.Length;
      this.remaining = length;
    } else {
      this.framing = Framing.Close;
      this.keepAlive = false;
    }
    this.on.head(code, raw);
    if (this.done) return undefined;
    if (this.framing === Framing.None || (this.framing === Framing.Length && this.remaining === 0)) {
      this.finishResponse(rest.byteLength > 0);
      return undefined;
    }
    return rest;
  }

  /** Takes body bytes; returns what is left of `bytes` (another exchange's, which is an error). */
  private readBody(bytes: Buffer): Buffer {
    switch (this.framing) {
      case Framing.Close:
        this.on.data(bytes);
        return Buffer.alloc(0);
      case Framing.Length: {
        const take = Math.min(this.remaining, bytes.byteLength);
        this.remaining -= take;
        this.on.data(take === bytes.byteLength ? bytes : bytes.subarray(0, take));
        if (this.remaining === 0) this.finishResponse(take < bytes.byteLength);
        return Buffer.alloc(0);
      }
      case Framing.Chunked:
        return this.readChunked(bytes);
      default:
        return Buffer.alloc(0);
    }
  }

  private readChunked(bytes: Buffer): Buffer {
    let at = 0;
    while (at < bytes.byteLength && !this.done) {
      if (this.chunkState === "data") {
        const take = Math.min(this.remaining, bytes.byteLength - at);
        if (take > 0) this.on.data(bytes.subarray(at, at + take));
        at += take;
        this.remaining -= take;
        if (this.remaining === 0) this.chunkState = "crlf";
        continue;
      }
      // A line: a chunk's size, the CRLF after its data, or a trailer.
      const newline = bytes.indexOf(0x0a, at);
      const piece = bytes.toString("latin1", at, newline < 0 ? bytes.byteLength : newline + 1);
      at = newline < 0 ? bytes.byteLength : newline + 1;
      this.line += piece;
      if (this.line.length > 4096) return this.fail("a chunk line of more than 4096 bytes");
      if (newline < 0) continue;
      const line = this.line.endsWith("\r\n") ? this.line.slice(0, -2) : this.line.slice(0, -1);
      this.line = "";
      if (this.chunkState === "crlf") {
        if (line !== "") return this.fail("chunk data longer than its size");
        this.chunkState = "size";
      } else if (this.chunkState === "size") {
        const size = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
        if (!size) return this.fail("a chunk size that is not hexadecimal");
        this.remaining = Number.parseInt(size[1]!, 16);
        this.chunkState = this.remaining === 0 ? "trailers" : "data";
      } else if (line === "") {
        this.finishResponse(at < bytes.byteLength);
      }
    }
    return Buffer.alloc(0);
  }

  private fail(why: string): Buffer {
    this.malformed(why);
    return Buffer.alloc(0);
  }

  /**
   * The response is whole. `trailing`: more bytes came after it, which no request asked for (a
   * broken origin): the response stands, as node:http's would, but the connection is not reused.
   */
  private finishResponse(trailing = false): void {
    if (this.done) return;
    this.done = true;
    if (trailing) this.keepAlive = false;
    this.on.end();
    this.maybeReuse();
  }

  /**
   * The response is over: the connection goes back to the pool if the request was sent whole
   * and the origin keeps it alive. An origin that answered before the request's body was all
   * there (a 401 to an upload, say) gets no more of it, and the connection closes.
   */
  private maybeReuse(): void {
    if (!this.requestComplete || !this.keepAlive || this.framing === Framing.Close) {
      this.socket.destroy();
      return;
    }
    this.detach();
    if (this.idleMs > 0) this.client.give(this.socket, this.idleMs);
    else this.socket.destroy();
  }
}
