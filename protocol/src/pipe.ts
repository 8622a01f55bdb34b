// One TCP connection carried as a stream of frames (OpenFrame): the socket's bytes go out as Data
// within the peer's credit, the peer's Data is written to the socket and credited back once the
// socket took it, End is a half-close each way, Reset an abort. The agent (its target), the
// visitor's `connect` (a local client) and the self-hosted relay's public ports (a remote
// client) each hold one per connection; the socket is whatever their runtime gives, seen through
// PipeSocket, so this file stays runtime-free.

import { ReceiveWindow, SendCredit } from "./flow.ts";
import { type Frame, FrameType, type ResetCode } from "./frames.ts";
import { MAX_DATA_CHUNK } from "./limits.ts";

/**
 * What a pipe needs of a socket: node:net's Socket has it (on Node, Bun and Deno), and so does
 * an adapter over stdin and stdout. `write`'s callback runs once the bytes left the process's
 * hands (node: written to the kernel), which is when they are credited back to the peer.
 */
export interface PipeSocket {
  write(bytes: Uint8Array, written: (error?: Error | null) => void): unknown;
  /** Half-close: what was written goes, then FIN; reading goes on. */
  end(): unknown;
  /** Aborts both directions. */
  destroy(): unknown;
  /** Stops and restarts the 'data' events (node: no event after pause() returns). */
  pause(): unknown;
  resume(): unknown;
}

/** How the pipe's socket side ended, for the stream's log line. */
export type PipeEnd = "closed" | "reset-by-peer" | "reset-here";

/**
 * One TCP connection as one stream. The owner feeds it the socket's events (`fromSocket`,
 * `socketEnded`, `socketFailed`) and the stream's frames from the peer (`receive`); the pipe
 * sends frames with `send` and calls `onDone` once, when the stream is over both ways.
 * Nothing is held without credit: past the peer's credit the socket is paused, and the one
 * chunk it had delivered waits (at most what one 'data' event carries).
 */
export class TcpPipe {
  private readonly credit = new SendCredit();
  private readonly window = new ReceiveWindow();
  /** Socket bytes read past the credit, waiting for a grant (the socket is paused meanwhile). */
  private waiting: Uint8Array | undefined;
  /** The socket ended its direction (EOF); End goes once `waiting` has. */
  private readEnded = false;
  private endSent = false;
  private endReceived = false;
  /** Writes handed to the socket and not yet written: the stream is over once none is left. */
  private writing = 0;
  private done = false;
  /** Bytes each way, for the owner's log line. */
  sent = 0;
  received = 0;

  constructor(
    readonly stream: number,
    private readonly socket: PipeSocket,
    private readonly send: (frame: Frame) => void,
    private readonly onDone: (pipe: TcpPipe, end: PipeEnd, why: string) => void,
    /** What a failure of this socket is called when it resets the stream. */
    private readonly failureCode: ResetCode = "origin-error",
  ) {}

  /** Whether the stream is over (both ways, or reset). */
  get finished(): boolean {
    return this.done;
  }

  /** The socket delivered `bytes`: on to the peer as far as credit goes, the rest waits paused. */
  fromSocket(bytes: Uint8Array): void {
    if (this.done || bytes.byteLength === 0) return;
    this.waiting = this.waiting ? concat(this.waiting, bytes) : bytes;
    this.flush();
  }

  /** The socket's reader got EOF: End follows what waits. */
  socketEnded(): void {
    if (this.done) return;
    this.readEnded = true;
    this.flush();
  }

  /** The socket failed or closed without EOF: the peer gets a Reset. */
  socketFailed(message: string): void {
    if (this.done) return;
    this.send({ type: FrameType.Reset, stream: this.stream, code: this.failureCode, message });
    this.finish("reset-here", message);
  }

  /** The owner gives up on the stream (its session ended): the socket is aborted, the peer told if it can hear. */
  abort(message: string, tellPeer = true): void {
    if (this.done) return;
    if (tellPeer) this.send({ type: FrameType.Reset, stream: this.stream, code: "cancelled", message });
    this.finish("reset-here", message);
  }

  /**
   * A frame of this stream from the peer.
   * @returns undefined, or why the frame breaks the protocol (the owner resets the stream).
   */
  receive(frame: Frame): string | undefined {
    if (this.done) return undefined;
    switch (frame.type) {
      case FrameType.Data: {
        if (this.endReceived) return "Data after End";
        const size = frame.bytes.byteLength;
        const violation = this.window.receive(size);
        if (violation) return violation;
        this.received += size;
        this.writing++;
        this.socket.write(frame.bytes, (error) => {
          this.writing--;
          if (error || this.done) return;
          const grant = this.window.consume(size);
          if (grant > 0) this.send({ type: FrameType.Credit, stream: this.stream, bytes: grant });
          this.settle();
        });
        return undefined;
      }
      case FrameType.End:
        if (this.endReceived) return "a second End";
        this.endReceived = true;
        this.socket.end();
        this.settle();
        return undefined;
      case FrameType.Credit: {
        const violation = this.credit.grant(frame.bytes);
        if (violation) return violation;
        this.flush();
        return undefined;
      }
      case FrameType.Reset:
        this.finish("reset-by-peer", frame.message || frame.code);
        return undefined;
      default:
        return `a frame of type ${frame.type} on a TCP stream`;
    }
  }

  private flush(): void {
    while (this.waiting && !this.done) {
      const want = Math.min(this.waiting.byteLength, MAX_DATA_CHUNK);
      const take = this.credit.take(want);
      if (take === 0) {
        this.socket.pause();
        return;
      }
      const bytes = this.waiting.subarray(0, take);
      this.waiting = take === this.waiting.byteLength ? undefined : this.waiting.subarray(take);
      this.sent += take;
      this.send({ type: FrameType.Data, stream: this.stream, bytes });
    }
    if (this.done) return;
    this.socket.resume();
    if (this.readEnded && !this.endSent) {
      this.endSent = true;
      this.send({ type: FrameType.End, stream: this.stream });
      this.settle();
    }
  }

  /** Both directions over and every write done: the stream is finished. */
  private settle(): void {
    if (this.endSent && this.endReceived && this.writing === 0) this.finish("closed", "");
  }

  private finish(end: PipeEnd, why: string): void {
    if (this.done) return;
    this.done = true;
    this.waiting = undefined;
    if (end !== "closed") this.socket.destroy();
    this.onDone(this, end, why);
  }
}

/**
 * Feeds a node:net-style socket's events to `pipe` (Node, Bun and Deno all have node:net). An
 * 'error' or a 'close' before EOF both ways is a failure; 'end' is the read side's EOF.
 */
export function attachSocket(
  socket: PipeSocket & { on(event: string, listener: (...args: never[]) => void): unknown },
  pipe: TcpPipe,
): void {
  socket.on("data", ((bytes: Uint8Array) => pipe.fromSocket(bytes)) as never);
  socket.on("end", (() => pipe.socketEnded()) as never);
  socket.on("error", ((error: Error) => pipe.socketFailed(error.message)) as never);
  socket.on("close", (() => pipe.socketFailed("the connection closed")) as never);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
