import { concatBytes, type Frame, FrameSession, type UnackedLimit } from "@burrow/protocol";
import { isTeardownNoise } from "./errors.ts";
import type { AgentLink } from "./polling.ts";

/**
 * An agent's session on the relay: what its streams belong to, across the connections that
 * carry it. A cut connection leaves the session waiting (RESUME_SECONDS) for the same agent to
 * come back and say how far it got; its streams then go on where they were (see FrameSession).
 * Runtime-free; lives in the Durable Object's memory, so a relay restart ends it.
 */
export class AgentSession {
  readonly frames: FrameSession;
  /** The connection carrying the session now; undefined while the agent is away. */
  link: AgentLink | undefined;
  /** Ends the session if the agent does not come back in time. */
  resumeTimer: ReturnType<typeof setTimeout> | null = null;
  /** Writes the session's counts once it has been quiet a moment (see TunnelObject.use). */
  persistTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly id: string,
    /** The owner key of admission.ts: only the same owner may resume. */
    readonly owner: string,
    readonly label: string,
    /** What the session keeps for the agent at most until it acknowledges (see unackedLimit). */
    limit: UnackedLimit,
    counts?: { sent: number; received: number },
  ) {
    // A zero timer, not a microtask: it fires once the events already queued (other visitors'
    // requests, at load) have run, so their frames go to the agent as one message, one send
    // and one wake-up of the agent instead of one each. Alone, a request waits for nothing.
    this.frames = new FrameSession((flush) => void setTimeout(flush, 0), counts, limit);
  }

  /** Queues a frame for the agent: on the connection, or kept for the next one. */
  push(frame: Frame): void {
    this.frames.push(frame);
  }

  /** `link` carries the session from now on; the agent had received `peerReceived` frames. */
  attach(link: AgentLink, peerReceived: number): void {
    clearTimeout(this.resumeTimer);
    this.link = link;
    this.frames.attach((parts, size) => {
      try {
        link.send(parts.length === 1 ? parts[0]! : concatBytes(parts, size));
      } catch (error) {
        if (!isTeardownNoise(error)) console.error("sending frames to the agent failed", error);
      }
    }, peerReceived);
  }

  detach(): void {
    this.link = undefined;
    this.frames.detach();
  }
}

/** A session id: 128 random bits, URL-safe. */
export function sessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}
