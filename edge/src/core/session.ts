import { concatBytes, type Frame, FrameSession, type UnackedLimit } from "@burrow/protocol";
import { isTeardownNoise } from "./errors.ts";
import type { Link } from "./host.ts";
import { cancelTimer } from "./timers.ts";

/**
 * An agent's session on the relay: what its streams belong to, across the connections that
 * carry it. A cut connection leaves the session waiting (RESUME_SECONDS) for the same agent to
 * come back and say how far it got; its streams then go on where they were (see FrameSession).
 * Runtime-free; lives in the Durable Object's memory, so a relay restart ends it.
 */
export class AgentSession {
  readonly frames: FrameSession;
  /** The connection carrying the session now; undefined while the agent is away. */
  link: Link | undefined;
  /** Ends the session if the agent does not come back in time. */
  resumeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Writes the session's counts once it has been quiet a moment (see TunnelObject.use). */
  persistTimer: ReturnType<typeof setTimeout> | undefined;
  /** The agent serves a TCP tunnel (its hello said `tcp`): visitors come with `agent connect`. */
  tcp = false;
  /** Visitor input paused until the session takes it again (see takesInput). */
  private readonly paused = new Set<() => void>();
  /** Kept frames past which visitors' input waits for the agent's Acks (see takesInput). */
  private readonly inputFrames: number;

  constructor(
    readonly id: string,
    /** The owner key of admission.ts: only the same owner may resume. */
    readonly owner: string,
    readonly label: string,
    /** What the session keeps for the agent at most until it acknowledges (see unackedLimit). */
    limit: UnackedLimit,
    counts?: { sent: number; received: number },
    /** The host's defer (see TunnelHost.defer). */
    defer: (work: () => void) => void = (work) => void setTimeout(work, 0),
  ) {
    // Deferred, not a microtask: the flush runs once the events already queued (other
    // visitors' requests, at load) have run, so their frames go to the agent as one message,
    // one send and one wake-up of the agent instead of one each. Alone, a request waits for nothing.
    this.frames = new FrameSession(defer, counts, limit);
    this.inputFrames = Math.floor(limit.frames / 2);
    this.frames.onAcknowledged = () => this.resume();
  }

  /**
   * Whether the relay reads more of its visitors' input (request bodies, WebSocket messages)
   * for this session now. Not while the agent is away: every chunk read becomes a frame kept
   * for it, and flow control bounds their bytes, not their number, so a visitor trickling
   * 1-byte chunks through a cut would pass the session's frame bound (unackedLimit) and end
   * it, failing every stream of the tunnel. Nor while half that bound is kept unacknowledged:
   * a cut the relay has not noticed yet looks the same. An agent that acknowledges (within
   * ACK_DELAY_MS of each message) never comes near it. While paused, TCP backpressure reaches
   * the visitor, as when a stream's credit runs out.
   */
  get takesInput(): boolean {
    return this.link !== undefined && this.frames.outstandingFrames < this.inputFrames;
  }

  /** Calls `wake` once the session takes input again (see takesInput), or at once if it does. */
  whenTakesInput(wake: () => void): void {
    if (this.takesInput) wake();
    else this.paused.add(wake);
  }

  /** Wakes the paused input, if the session takes it again. */
  private resume(): void {
    if (this.paused.size === 0 || !this.takesInput) return;
    const waiting = [...this.paused];
    this.paused.clear();
    for (const wake of waiting) wake();
  }

  /** Queues a frame for the agent: on the connection, or kept for the next one. */
  push(frame: Frame): void {
    this.frames.push(frame);
  }

  /** `link` carries the session from now on; the agent had received `peerReceived` frames. */
  attach(link: Link, peerReceived: number): void {
    cancelTimer(this.resumeTimer);
    this.link = link;
    this.frames.attach((parts, size) => {
      try {
        link.send(parts.length === 1 ? parts[0]! : concatBytes(parts, size));
      } catch (error) {
        if (!isTeardownNoise(error)) console.error("sending frames to the agent failed", error);
      }
    }, peerReceived);
    this.resume();
  }

  detach(): void {
    this.link = undefined;
    this.frames.detach();
  }
}
