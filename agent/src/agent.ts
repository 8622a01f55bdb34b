import {
  CloseCode,
  CONNECT_PATH,
  decodeFrames,
  type Frame,
  FrameBatch,
  FrameType,
  HEARTBEAT,
  PROTOCOL_VERSION,
  ProtocolError,
  type RefusedFrame,
} from "@burrow/protocol";
import { AgentError } from "./errors.ts";
import { Forwarder } from "./forward.ts";
import type { Log } from "./log.ts";
import { randomClaim } from "./names.ts";
import type { Origin } from "./origin.ts";
import type { Runtime, WebSocketLike } from "./runtime.ts";

export interface AgentOptions {
  /** The relay's base URL, http(s)://. */
  relay: URL;
  name: string;
  token: string;
  /** Milliseconds between heartbeats; the connection is declared dead after 2.5 silent periods. */
  heartbeatMs: number;
  /** The agent's version, sent in the hello. */
  version: string;
}

/** How one connection ended. */
interface SessionEnd {
  ready: boolean;
  refused?: RefusedFrame;
  why: string;
}

const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 30_000;
const STOP_GRACE_MS = 2_000;

/**
 * Keeps one tunnel up: connects, says hello, serves streams, and after any drop reconnects
 * with capped, jittered exponential backoff under the same name (the claim proves it is us).
 */
export class Agent {
  private readonly claim = randomClaim();
  private socket: WebSocketLike | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private endSession: ((why: string) => void) | undefined;

  constructor(
    private readonly options: AgentOptions,
    private readonly origin: Origin,
    private readonly runtime: Runtime,
    private readonly log: Log,
  ) {}

  /** The URL the agent dials: ws(s)://relay/_burrow/connect?name=... */
  get connectUrl(): string {
    const url = new URL(CONNECT_PATH, this.options.relay);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("name", this.options.name);
    return url.href;
  }

  /**
   * Runs until `stop()`. Resolves when stopped.
   * @throws {AgentError} "refused" when the relay refuses the tunnel for a reason retrying cannot fix.
   */
  async run(): Promise<void> {
    let attempt = 0;
    let everReady = false;
    while (!this.stopped) {
      const end = await this.session();
      if (this.stopped) break;
      if (end.refused) throw refusal(end.refused);
      if (end.ready) {
        attempt = 0;
        everReady = true;
      }
      const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt++) * (0.5 + Math.random() / 2);
      if (!everReady && attempt === 1) {
        this.log.error(
          `cannot reach the relay at ${this.options.relay.origin} (${end.why})`,
          "start it with `npm run dev`, or point --relay (BURROW_RELAY) at a running relay; retrying meanwhile",
        );
      }
      this.log.info(`${end.ready ? "connection lost" : "cannot connect"} (${end.why}); reconnecting in ${formatDelay(delay)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Closes the connection cleanly (the relay frees the name at once) and ends `run()`. */
  stop(): void {
    this.stopped = true;
    this.socket?.close(CloseCode.Normal, "agent stopped");
    this.wake?.();
    // A relay that never completes the close handshake does not hold the agent up for long.
    setTimeout(() => this.endSession?.("stopped"), STOP_GRACE_MS);
  }

  private session(): Promise<SessionEnd> {
    const { name, token, heartbeatMs, version } = this.options;
    return new Promise<SessionEnd>((resolve, reject) => {
      let ready = false;
      let refused: RefusedFrame | undefined;
      let lastHeard = performance.now();
      let heartbeat: ReturnType<typeof setInterval> | undefined;
      let socket: WebSocketLike;
      const batch = new FrameBatch(
        (message) => {
          try {
            socket.send(message);
          } catch (error) {
            this.log.debug("a send failed on a closing connection", error);
          }
        },
        (flush) => setImmediate(flush),
      );
      const send = (frame: Frame) => batch.push(frame);
      const forwarder = new Forwarder(this.origin, send, this.log);

      try {
        socket = this.runtime.openWebSocket(this.connectUrl);
      } catch (error) {
        if (this.runtime.explain?.(error)) reject(error);
        else resolve({ ready: false, why: (error as Error).message });
        return;
      }
      this.socket = socket;
      socket.binaryType = "arraybuffer";
      let errorText = "";

      socket.addEventListener("open", () => {
        send({ type: FrameType.Hello, version: PROTOCOL_VERSION, agent: version, name, token, claim: this.claim });
        heartbeat = setInterval(() => {
          if (performance.now() - lastHeard > heartbeatMs * 2.5) {
            this.log.debug("no heartbeat answer; closing the connection");
            socket.close(CloseCode.HeartbeatTimeout, "heartbeat timeout");
            finish("the relay stopped answering heartbeats");
            return;
          }
          socket.send(HEARTBEAT.ping);
        }, heartbeatMs);
      });

      socket.addEventListener("message", ({ data }) => {
        lastHeard = performance.now();
        if (typeof data === "string") return; // a heartbeat answer
        let frames: Frame[];
        try {
          frames = decodeFrames(new Uint8Array(data as ArrayBuffer));
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          this.log.warn(`the relay sent a malformed frame (${error.message}); reconnecting`);
          socket.close(CloseCode.ProtocolError, "malformed frame");
          finish(`malformed frame: ${error.message}`);
          return;
        }
        for (const frame of frames) {
          if (frame.type === FrameType.Ready) {
            ready = true;
            this.log.info(`tunnel ${frame.name} is up: ${frame.url} -> ${this.origin.url}`);
          } else if (frame.type === FrameType.Refused) {
            refused = frame;
          } else if (ready) {
            forwarder.receive(frame);
          }
        }
      });

      socket.addEventListener("error", (event) => {
        errorText ||= event.message || String(event.error ?? "") || "";
        // A runtime that forbids the connection (Deno without --allow-net) will forbid it again.
        if (event.error && this.runtime.explain?.(event.error)) {
          finished = true;
          clearInterval(heartbeat);
          reject(event.error);
        }
      });

      socket.addEventListener("close", ({ code, reason }) => {
        finish(reason ? `${code} ${reason}` : errorText || `code ${code}`);
      });

      let finished = false;
      this.endSession = finish;
      function finish(why: string) {
        if (finished) return;
        finished = true;
        clearInterval(heartbeat);
        forwarder.abortAll();
        resolve({ ready, refused, why });
      }
    });
  }
}

function refusal(frame: RefusedFrame): AgentError {
  const hints: Record<string, string> = {
    "name-taken": "pick another name with --name, or leave it out for a random one",
    unauthorized: "ask the relay's owner for its token and pass it with --token (or BURROW_TOKEN)",
    "version-mismatch": "the agent and relay must speak the same protocol version",
  };
  return new AgentError("refused", `the relay refused the tunnel: ${frame.message}`, hints[frame.code] ?? "");
}

function formatDelay(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`;
}
