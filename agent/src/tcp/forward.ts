import net from "node:net";
import { attachSocket, type Frame, FrameType, type InvalidFrame, TcpPipe } from "@burrow/protocol";
import type { Log } from "../log.ts";

/** Where a TCP tunnel's connections go: one host and port, nothing else. */
export interface TcpTarget {
  host: string;
  port: number;
  /** "127.0.0.1:22", for logs. */
  label: string;
}

/**
 * The agent's side of a TCP tunnel's streams on one relay session: each Open becomes a
 * connection to the tunnel's one target (the frame names no address: the agent reaches nothing
 * else), and its bytes travel as the stream's Data both ways (protocol's TcpPipe).
 */
export class TcpForwarder {
  private readonly pipes = new Map<number, TcpPipe>();

  constructor(
    private readonly target: TcpTarget,
    private readonly send: (frame: Frame) => void,
    private readonly log: Log,
  ) {}

  get open(): number {
    return this.pipes.size;
  }

  /** Not an HTTP response: the HTTPS transport may hold any POST as a poll. */
  get responding(): boolean {
    return false;
  }

  receive(frame: Frame | InvalidFrame): boolean {
    if (frame.type === "invalid") {
      this.send({ type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: frame.error.message });
      this.pipes.get(frame.stream)?.abort(frame.error.message, false);
      return true;
    }
    if (frame.type === FrameType.Open) {
      this.connect(frame.stream, frame.from);
      return true;
    }
    if (!("stream" in frame)) return false;
    const pipe = this.pipes.get(frame.stream);
    if (!pipe) {
      // Credit and Reset may trail a stream that just ended; Data for it is answered once.
      if (frame.type === FrameType.Data || frame.type === FrameType.End) {
        this.send({ type: FrameType.Reset, stream: frame.stream, code: "cancelled", message: "this stream is no longer open" });
      }
      return true;
    }
    const violation = pipe.receive(frame);
    if (violation) {
      this.log.warn(`tcp stream ${frame.stream}: the relay broke the protocol: ${violation}`);
      this.send({ type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: violation });
      pipe.abort(violation, false);
    }
    return true;
  }

  abortAll(): void {
    for (const pipe of [...this.pipes.values()]) pipe.abort("the session ended", false);
  }

  private connect(stream: number, from: string): void {
    if (this.pipes.has(stream)) {
      this.send({ type: FrameType.Reset, stream, code: "protocol-error", message: `stream ${stream} is open already` });
      return;
    }
    const started = performance.now();
    // allowHalfOpen: the visitor's EOF (End) closes our writing side only; the target may
    // still answer (ssh's `cat > file` ends its input and then waits for the exit status).
    const socket = net.connect({ host: this.target.host, port: this.target.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    let connected = false;
    const pipe = new TcpPipe(
      stream,
      socket,
      this.send,
      (ended, end, why) => {
        this.pipes.delete(stream);
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        const who = from ? ` from ${from}` : "";
        if (!connected) {
          this.log.warn(`tcp${who}: cannot reach ${this.target.label}: ${why}`, "tcp-unreachable");
          return;
        }
        const bytes = `${ended.received} bytes in, ${ended.sent} out, ${seconds}s`;
        const how =
          end === "closed" ? "closed" : end === "reset-by-peer" ? `ended by the visitor's side (${why})` : `reset (${why})`;
        this.log.info(`tcp${who} -> ${this.target.label} ${how}: ${bytes}`, "tcp-stream", {
          from,
          target: this.target.label,
          received: ended.received,
          sent: ended.sent,
          end,
        });
      },
      "origin-error",
    );
    this.pipes.set(stream, pipe);
    socket.once("connect", () => {
      connected = true;
    });
    socket.once("error", (error) => {
      if (connected) return;
      // Not reached: the visitor's connection fails at once with the cause.
      this.send({
        type: FrameType.Reset,
        stream,
        code: "origin-unreachable",
        message: `the agent cannot reach ${this.target.label}: ${(error as NodeJS.ErrnoException).code ?? error.message}`,
      });
      pipe.abort((error as NodeJS.ErrnoException).code ?? error.message, false);
    });
    attachSocket(socket, pipe);
  }
}
