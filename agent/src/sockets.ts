import type { IncomingMessage } from "node:http";
import {
  closeReason,
  type Frame,
  FrameType,
  type HeaderList,
  HOP_BY_HOP,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  MAX_WS_MESSAGE,
  PIECE_OVERSHOOT,
  ReceiveWindow,
  type RequestHeadFrame,
  SendCredit,
  type WsCloseFrame,
  type WsMessageFrame,
} from "@burrow/protocol";
import WebSocket from "ws";
import type { Observer, SocketWatch } from "./inspector/observer.ts";
import type { Log } from "./log.ts";
import type { Origin } from "./origin.ts";

// The `ws` package on every runtime, like node:http for plain requests: the WHATWG WebSocket
// of Bun and Deno cannot send the visitor's cookies or other headers to the origin.

/** Environment variables the `ws` package reads as it loads (Deno's task must grant them). */
export const WS_ENV_VARS = ["WS_NO_BUFFER_UTIL", "WS_NO_UTF_8_VALIDATE"];

interface SocketStream {
  readonly id: number;
  readonly head: RequestHeadFrame;
  readonly startedAt: number;
  readonly ws: WebSocket;
  /** Message bytes the relay accepts before it grants more. */
  readonly credit: SendCredit;
  /** The origin's message pieces waiting for credit. */
  queue: WsMessageFrame[];
  queued: number;
  /** Visitor message bytes from the relay: within its credit, credited back once the origin took them. */
  readonly window: ReceiveWindow;
  open: boolean;
  /** The inspector's view of this WebSocket, when it is on. */
  watch: SocketWatch | undefined;
}

/** True when a request head asks for a WebSocket. */
export function isUpgrade(head: RequestHeadFrame): boolean {
  return head.headers.some(([name, value]) => name.toLowerCase() === "upgrade" && value.toLowerCase() === "websocket");
}

// Handshake fields the `ws` client sets itself; Host names the origin, as for requests.
const OWN_FIELDS = new Set([
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "sec-websocket-protocol",
]);

/**
 * Fields for a body the handshake never has: passed on, `Transfer-Encoding: chunked` made the
 * origin read the agent's first WebSocket frames as chunks (websockets/ws then failed the
 * connection on "RSV2 and RSV3 must be clear"), and a Content-Length would make a server
 * that honours it take them as the body.
 */
const NO_BODY_FIELDS = new Set(["content-length", "expect"]);

/**
 * Visitor WebSockets, origin side: for each upgrade stream the agent opens a WebSocket to its
 * origin (same host and port as requests, never another) and relays messages and closes as
 * frames, within the relay's credit. A visitor that stops reading pauses the origin's socket.
 */
export class OriginSockets {
  private readonly streams = new Map<number, SocketStream>();

  constructor(
    private readonly origin: Origin,
    private readonly send: (frame: Frame) => void,
    private readonly log: Log,
    private readonly observer?: Observer,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  has(id: number): boolean {
    return this.streams.has(id);
  }

  open(head: RequestHeadFrame): void {
    const id = head.stream;
    const offered = head.headers.find(([name]) => name.toLowerCase() === "sec-websocket-protocol")?.[1];
    const protocols =
      offered
        ?.split(",")
        .map((p) => p.trim())
        .filter(Boolean) ?? [];
    const headers: Record<string, string> = {};
    for (const [name, value] of head.headers) {
      const lower = name.toLowerCase();
      if (OWN_FIELDS.has(lower) || HOP_BY_HOP.has(lower) || NO_BODY_FIELDS.has(lower)) continue;
      headers[name] = headers[name] ? `${headers[name]}, ${value}` : value;
    }
    const watch = this.observer?.socket(head);
    let ws: WebSocket;
    try {
      ws = new WebSocket(`${this.origin.url.replace(/^http/, "ws")}${head.path}`, protocols, {
        ...this.origin.tls,
        headers: { ...headers, host: this.origin.hostFor(head.headers) },
        perMessageDeflate: false,
        followRedirects: false,
        maxPayload: MAX_WS_MESSAGE,
      });
    } catch (error) {
      // `ws` throws at once for what it cannot put in a handshake: a URL with a fragment
      // (`/ws#x`), an invalid or repeated subprotocol, a header value node:http refuses.
      const message = `the WebSocket request could not be sent to the local server: ${(error as Error).message}`;
      this.send({ type: FrameType.Reset, stream: id, code: "protocol-error", message });
      watch?.fail("protocol-error", message);
      this.log.request(head.method, head.path, "protocol-error", performance.now());
      return;
    }
    const stream: SocketStream = {
      id,
      head,
      startedAt: performance.now(),
      ws,
      credit: new SendCredit(),
      queue: [],
      queued: 0,
      // Relays before issue 22 send a whole piece while any credit is left (see PIECE_OVERSHOOT).
      window: new ReceiveWindow(INITIAL_WINDOW, PIECE_OVERSHOOT),
      open: false,
      watch,
    };
    this.streams.set(id, stream);

    ws.on("open", () => {
      stream.open = true;
      const answer: HeaderList = ws.protocol ? [["sec-websocket-protocol", ws.protocol]] : [];
      this.send({ type: FrameType.ResponseHead, stream: id, status: 101, headers: answer });
      watch?.open(101, answer);
      this.log.request(head.method, head.path, 101, stream.startedAt);
    });
    ws.on("unexpected-response", (_request, response) => this.refused(stream, response));
    ws.on("error", (error: NodeJS.ErrnoException) => {
      if (stream.open || !this.streams.has(id)) return;
      this.streams.delete(id);
      const { unreachable, message } = this.origin.describe(error.code ?? error.message, "refused the WebSocket");
      this.send({ type: FrameType.Reset, stream: id, code: unreachable ? "origin-unreachable" : "origin-error", message });
      watch?.fail(unreachable ? "origin-unreachable" : "origin-error", message);
      this.log.request(head.method, head.path, unreachable ? "origin-unreachable" : "origin-error", stream.startedAt);
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => this.fromOrigin(stream, data, isBinary));
    ws.on("close", (code: number, reason: Buffer) => {
      if (!stream.open || !this.streams.has(id)) return;
      this.streams.delete(id);
      this.send({ type: FrameType.WsClose, stream: id, code: code || 1005, reason: closeReason(reason.toString()) });
      watch?.close(code || 1005, reason.toString(), "origin");
    });
  }

  /** Handles a frame for a WebSocket stream; returns false if the stream is not one of these. */
  receive(frame: Frame): boolean {
    const stream = "stream" in frame ? this.streams.get(frame.stream) : undefined;
    if (!stream) return false;
    switch (frame.type) {
      case FrameType.WsMessage:
        this.fromRelay(stream, frame);
        return true;
      case FrameType.WsClose:
        this.closeByRelay(stream, frame);
        return true;
      case FrameType.Credit: {
        const violation = stream.credit.grant(frame.bytes);
        if (violation) this.violated(stream, `the relay granted too much: ${violation}`);
        else this.flush(stream);
        return true;
      }
      case FrameType.Reset:
        this.streams.delete(stream.id);
        stream.ws.terminate();
        stream.watch?.fail("cancelled", "the relay reset the stream: the visitor went away");
        return true;
      default:
        return false;
    }
  }

  /** Abandons stream `id` (it broke the protocol); returns whether it was one of these. */
  abort(id: number): boolean {
    const stream = this.streams.get(id);
    if (!stream) return false;
    this.streams.delete(id);
    stream.ws.terminate();
    stream.watch?.fail("protocol-error", "the stream broke the protocol");
    return true;
  }

  /** The relay broke the protocol on this stream: it ends here, and the relay is told why. */
  private violated(stream: SocketStream, message: string): void {
    this.abort(stream.id);
    this.send({ type: FrameType.Reset, stream: stream.id, code: "protocol-error", message });
    this.log.warn(`stream ${stream.id}: ${message}; reset that stream`);
  }

  abortAll(): void {
    for (const stream of this.streams.values()) {
      stream.ws.terminate();
      stream.watch?.fail("cancelled", "the session with the relay ended");
    }
    this.streams.clear();
  }

  /** The origin answered the upgrade with a plain HTTP response: pass it on as one. */
  private refused(stream: SocketStream, response: IncomingMessage): void {
    const headers: HeaderList = [];
    for (let i = 0; i + 1 < response.rawHeaders.length; i += 2)
      headers.push([response.rawHeaders[i]!, response.rawHeaders[i + 1]!]);
    const kept = headers.filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase()));
    this.send({ type: FrameType.ResponseHead, stream: stream.id, status: response.statusCode ?? 502, headers: kept });
    stream.watch?.open(response.statusCode ?? 502, kept);
    // Refusal pages are small; credit still bounds what goes out.
    response.on("data", (chunk: Buffer) => {
      for (let offset = 0; offset < chunk.byteLength; ) {
        const size = stream.credit.take(Math.min(MAX_DATA_CHUNK, chunk.byteLength - offset));
        if (size === 0) break;
        this.send({ type: FrameType.Data, stream: stream.id, bytes: chunk.subarray(offset, offset + size) });
        offset += size;
      }
    });
    response.on("end", () => {
      this.streams.delete(stream.id);
      stream.watch?.fail("refused", `the local server answered the upgrade with ${response.statusCode} instead of 101`);
      this.send({ type: FrameType.End, stream: stream.id });
      this.log.request(stream.head.method, stream.head.path, response.statusCode ?? 502, stream.startedAt);
    });
  }

  private fromOrigin(stream: SocketStream, data: Buffer, binary: boolean): void {
    stream.watch?.message("origin", data, binary, true);
    for (let offset = 0; ; offset += MAX_DATA_CHUNK) {
      const bytes = data.subarray(offset, offset + MAX_DATA_CHUNK);
      const final = offset + MAX_DATA_CHUNK >= data.byteLength;
      stream.queue.push({ type: FrameType.WsMessage, stream: stream.id, binary, final, bytes });
      stream.queued += bytes.byteLength;
      if (final) break;
    }
    this.flush(stream);
  }

  /**
   * Sends the origin's pieces while credit lasts, the last one cut where the credit ends (the
   * rest of it waits, the same message's next piece); a long queue pauses the origin's socket.
   */
  private flush(stream: SocketStream): void {
    while (stream.queue.length > 0 && stream.credit.available > 0) {
      const piece = stream.queue[0]!;
      const size = stream.credit.take(piece.bytes.byteLength);
      stream.queued -= size;
      if (size === piece.bytes.byteLength) {
        stream.queue.shift();
        this.send(piece);
      } else {
        this.send({ ...piece, final: false, bytes: piece.bytes.subarray(0, size) });
        stream.queue[0] = { ...piece, bytes: piece.bytes.subarray(size) };
      }
    }
    if (stream.queued > INITIAL_WINDOW) stream.ws.pause();
    else stream.ws.resume();
  }

  /**
   * Each piece goes on to the origin as a WebSocket fragment as it comes (RFC 6455 section 5.4),
   * so a message bigger than the window never waits for itself; the relay gets credit for a
   * piece once the origin's connection took it.
   */
  private fromRelay(stream: SocketStream, frame: WsMessageFrame): void {
    if (!stream.open) {
      this.abort(stream.id);
      this.send({
        type: FrameType.Reset,
        stream: stream.id,
        code: "protocol-error",
        message: "a WebSocket message arrived before the local server accepted the WebSocket",
      });
      return;
    }
    const size = frame.bytes.byteLength;
    const overrun = stream.window.receive(size);
    if (overrun) {
      this.violated(stream, `the relay sent more of the visitor's messages than its credit allows (${overrun})`);
      return;
    }
    stream.watch?.message("visitor", frame.bytes, frame.binary, frame.final);
    stream.ws.send(frame.bytes, { binary: frame.binary, fin: frame.final }, () => {
      const credit = stream.window.consume(size);
      if (credit > 0 && this.streams.has(stream.id)) this.send({ type: FrameType.Credit, stream: stream.id, bytes: credit });
    });
  }

  private closeByRelay(stream: SocketStream, frame: WsCloseFrame): void {
    this.streams.delete(stream.id);
    stream.watch?.close(frame.code, frame.reason, "visitor");
    if (!stream.open) {
      // The visitor's side closed before the origin answered: nothing of this stream goes on.
      stream.ws.terminate();
      this.send({ type: FrameType.Reset, stream: stream.id, code: "cancelled", message: "the visitor closed the WebSocket" });
      return;
    }
    // 1005 and 1006 are never sent on the wire (RFC 6455 section 7.4.1): a close without a code,
    // or no close frame at all, tells the origin the same.
    if (frame.code === 1006) stream.ws.terminate();
    else if (frame.code === 1005) stream.ws.close();
    else stream.ws.close(sendableCode(frame.code), closeReason(frame.reason));
    this.log.request(stream.head.method, stream.head.path, `101 closed ${frame.code}`, stream.startedAt);
  }
}

/**
 * A close code `ws` agrees to send (RFC 6455 section 7.4: 1004 and 1015 are reserved, 1016-2999
 * are for future RFCs): the others become 1011, "unexpected condition".
 */
export function sendableCode(code: number): number {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
    ? code
    : 1011;
}
