import {
  attachSocket,
  DEFAULT_MAX_STREAMS,
  type Frame,
  FrameType,
  type InvalidFrame,
  MAX_CONNECT_STREAM_ID,
  type PipeSocket,
  TcpPipe,
} from "@burrow/protocol";
import type { Log } from "../log.ts";

/** A local client's socket as `connect` gets it: node:net's, or stdin and stdout together. */
export type ClientSocket = PipeSocket & { on(event: string, listener: (...args: never[]) => void): unknown };

/** How one local connection ended, for `connect --stdio` (its exit status). */
export interface ClientEnd {
  stream: number;
  reset: boolean;
  why: string;
}

/**
 * The visitor's side of `agent connect`: each local client (an accepted connection, or stdin
 * and stdout) is one stream on the connect's session. Clients that arrive before the relay's
 * first Ready wait, paused; a session that ends (not resumed after a cut) resets its streams,
 * whose local connections close.
 */
export class LocalClients {
  private current: ClientStreams | undefined;
  private readonly waiting: ClientSocket[] = [];

  constructor(
    private readonly log: Log,
    private readonly onEnd: (end: ClientEnd) => void = () => {},
  ) {}

  /** The streams of a new session (the Agent's service). */
  streams(send: (frame: Frame) => void): ClientStreams {
    this.current = new ClientStreams(send, this.log, this.onEnd);
    for (const socket of this.waiting.splice(0)) this.current.add(socket);
    return this.current;
  }

  /** A local client connected: a stream now, or once the relay says Ready (first, or after a session ended). */
  add(socket: ClientSocket): void {
    if (this.current && !this.current.ended) this.current.add(socket);
    else if (this.waiting.length >= DEFAULT_MAX_STREAMS) {
      // The relay would refuse more than a tunnel's streams anyway; none waits unbounded.
      this.log.warn(`${DEFAULT_MAX_STREAMS} connections already wait for the relay; closing another one`, "tcp-refused");
      socket.destroy();
    } else {
      socket.pause();
      this.waiting.push(socket);
    }
  }

  get open(): number {
    return (this.current?.open ?? 0) + this.waiting.length;
  }
}

/** One session's streams. */
export class ClientStreams {
  private readonly pipes = new Map<number, TcpPipe>();
  private next = 1;
  /** The session ended (abortAll): new clients wait for the next one. */
  ended = false;

  constructor(
    private readonly send: (frame: Frame) => void,
    private readonly log: Log,
    private readonly onEnd: (end: ClientEnd) => void,
  ) {}

  get open(): number {
    return this.pipes.size;
  }

  get responding(): boolean {
    return false;
  }

  add(socket: ClientSocket): void {
    // Ids wrap at MAX_CONNECT_STREAM_ID, skipping those still open (a long-lived --listen).
    let stream = this.next;
    while (this.pipes.has(stream)) stream = stream >= MAX_CONNECT_STREAM_ID ? 1 : stream + 1;
    this.next = stream >= MAX_CONNECT_STREAM_ID ? 1 : stream + 1;
    const pipe = new TcpPipe(
      stream,
      socket,
      this.send,
      (ended, end, why) => {
        this.pipes.delete(stream);
        if (end === "reset-by-peer") this.log.warn(`connection ${stream} was reset: ${why}`, "tcp-reset");
        else
          this.log.debug(`connection ${stream} ${end}: ${ended.sent} bytes out, ${ended.received} in${why ? ` (${why})` : ""}`);
        this.onEnd({ stream, reset: end !== "closed", why });
      },
      "cancelled",
    );
    this.pipes.set(stream, pipe);
    this.log.debug(`connection ${stream} opened`);
    this.send({ type: FrameType.Open, stream, from: "" });
    attachSocket(socket, pipe);
    socket.resume();
  }

  receive(frame: Frame | InvalidFrame): boolean {
    if (frame.type === "invalid" || !("stream" in frame)) return false;
    const pipe = this.pipes.get(frame.stream);
    if (!pipe) return true; // Credit or a Reset trailing a stream that ended
    const violation = pipe.receive(frame);
    if (violation) {
      this.log.warn(`connection ${frame.stream}: the relay broke the protocol: ${violation}`);
      this.send({ type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: violation });
      pipe.abort(violation, false);
    }
    return true;
  }

  abortAll(why = "the connection to the relay ended"): void {
    this.ended = true;
    for (const pipe of [...this.pipes.values()]) pipe.abort(why, false);
  }
}
