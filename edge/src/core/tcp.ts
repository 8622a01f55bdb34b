import {
  type CreditFrame,
  type DataFrame,
  type EndFrame,
  FrameType,
  INITIAL_WINDOW,
  type ResetCode,
  type ResetFrame,
  SendCredit,
  TcpPipe,
} from "@burrow/protocol";

/** The frames a TCP stream carries once open. */
export type TcpFrame = DataFrame | EndFrame | ResetFrame | CreditFrame;

/** Whether `frame` is one a TCP stream carries once open. */
export function isTcpFrame(frame: { type: unknown }): frame is TcpFrame {
  return (
    frame.type === FrameType.Data ||
    frame.type === FrameType.End ||
    frame.type === FrameType.Reset ||
    frame.type === FrameType.Credit
  );
}

import type { AgentSession } from "./session.ts";

// TCP tunnels' streams on the relay: a visitor's `agent connect` opens streams on its own
// session (its ids), each joined here to a stream of the agent's session (the relay's ids).
// The relay holds no bytes of them: Data, End, Reset and Credit pass from one session to the
// other with the stream id changed, so what is in flight is what the two ends' windows allow.
// The relay still checks each Data against the credit its receiver gave (the SendCredit pairs
// below): a sender that ignores credit is reset here, before its bytes cost the other session.
// A self-hosted relay's public TCP port ends the stream here instead, in a TcpPipe. Runtime-free.

/** A connector: a visitor's `agent connect` session (an AgentSession over its link, see tunnel-connect.ts). */
export interface Connector {
  readonly session: AgentSession;
  /** The visitor's address as the relay saw it ("" unknown). */
  readonly from: string;
  /** Its streams, by its own ids. */
  readonly streams: Map<number, Joined>;
}

/**
 * A connector's streams as its link's attachment keeps them for a wake from hibernation (see
 * TcpRoutes.save): five numbers a stream, its two ids, the credit each way not yet given back
 * (what its SendCredits lack of the window) and its ends (1: to the agent, 2: to the visitor).
 * A Uint32Array: a plain array with one id past 2^30 in it is serialized as doubles, 9 bytes each.
 */
export type SavedStreams = Uint32Array;

/**
 * Streams a connector's attachment keeps at most: 64 of them take 1280 bytes, and with the rest
 * of the attachment (measured with v8.serialize at its longest: 1710 bytes) stay under the
 * 2 KiB a hibernatable WebSocket's attachment may hold.
 */
const MAX_SAVED_STREAMS = 64;

/** A connector's stream joined to the agent's. */
interface Joined {
  readonly kind: "joined";
  readonly agentStream: number;
  readonly connector: Connector;
  readonly clientStream: number;
  /** What the agent allowed the visitor to send, and the visitor the agent. */
  readonly toAgent: SendCredit;
  readonly toVisitor: SendCredit;
  endedToAgent: boolean;
  endedToVisitor: boolean;
}

/** A public port's connection, ended at the relay (self-hosted). */
interface Piped {
  readonly kind: "piped";
  readonly agentStream: number;
  readonly pipe: TcpPipe;
  readonly from: string;
}

type Route = Joined | Piped;

/** The TCP streams of one tunnel, by the agent's stream id. */
export class TcpRoutes {
  private readonly routes = new Map<number, Route>();

  constructor(
    /** The agent's session now, or while it is away (its frames are kept for it). */
    private readonly agent: () => AgentSession | undefined,
    /** A fresh stream id on the agent's session. */
    private readonly nextId: () => number,
  ) {}

  get size(): number {
    return this.routes.size;
  }

  has(agentStream: number): boolean {
    return this.routes.has(agentStream);
  }

  /** Streams `from` holds (for MAX_STREAMS_PER_VISITOR). */
  heldBy(from: string | undefined): number {
    if (from === undefined) return 0;
    let held = 0;
    for (const route of this.routes.values()) {
      if ((route.kind === "joined" ? route.connector.from : route.from) === from) held++;
    }
    return held;
  }

  /** The connector opened stream `clientStream`: the agent is asked to connect its target. */
  open(connector: Connector, clientStream: number): string | undefined {
    if (connector.streams.has(clientStream)) return `stream ${clientStream} is open already`;
    const agent = this.agent();
    if (!agent) return undefined; // the caller refused it already
    const route: Joined = {
      kind: "joined",
      agentStream: this.nextId(),
      connector,
      clientStream,
      toAgent: new SendCredit(),
      toVisitor: new SendCredit(),
      endedToAgent: false,
      endedToVisitor: false,
    };
    this.routes.set(route.agentStream, route);
    connector.streams.set(clientStream, route);
    agent.push({ type: FrameType.Open, stream: route.agentStream, from: connector.from });
    return undefined;
  }

  /**
   * A public port's connection (self-hosted): a pipe ends it here. `attach` hands the pipe
   * its socket's events; the agent is asked to connect its target.
   */
  openPiped(from: string, socket: ConstructorParameters<typeof TcpPipe>[1]): TcpPipe | undefined {
    const agent = this.agent();
    if (!agent) return undefined;
    const agentStream = this.nextId();
    const pipe = new TcpPipe(
      agentStream,
      socket,
      (frame) => this.agent()?.push(frame),
      () => this.routes.delete(agentStream),
      "cancelled",
    );
    this.routes.set(agentStream, { kind: "piped", agentStream, pipe, from });
    agent.push({ type: FrameType.Open, stream: agentStream, from });
    return pipe;
  }

  /**
   * A frame of a TCP stream from the connector: on to the agent.
   * @returns undefined, or why it breaks the protocol (the stream was reset both ways).
   */
  fromConnector(connector: Connector, frame: TcpFrame): string | undefined {
    const route = connector.streams.get(frame.stream);
    if (!route) {
      // Credit and Reset may trail a stream that just ended; anything else is answered.
      if (frame.type !== FrameType.Credit && frame.type !== FrameType.Reset) {
        connector.session.push({
          type: FrameType.Reset,
          stream: frame.stream,
          code: "cancelled",
          message: "this stream is no longer open",
        });
      }
      return undefined;
    }
    const agent = this.agent();
    const violation = this.check(frame, route.toAgent, route.toVisitor, route.endedToAgent);
    if (violation) {
      this.reset(route, "protocol-error", violation);
      return violation;
    }
    if (frame.type === FrameType.End) route.endedToAgent = true;
    agent?.push({ ...frame, stream: route.agentStream });
    if (frame.type === FrameType.Reset) this.forget(route);
    else this.settle(route);
    return undefined;
  }

  /**
   * A frame of a TCP stream from the agent: on to its connector, or its pipe.
   * @returns "gone" for a stream that is not (or no longer) a TCP stream here, else undefined
   * or why it breaks the protocol.
   */
  fromAgent(frame: TcpFrame): string | "gone" | undefined {
    const route = this.routes.get(frame.stream);
    if (!route) return "gone";
    if (route.kind === "piped") {
      const violation = route.pipe.receive(frame);
      if (violation) route.pipe.abort(violation);
      return violation;
    }
    const violation = this.check(frame, route.toVisitor, route.toAgent, route.endedToVisitor);
    if (violation) {
      this.reset(route, "protocol-error", violation);
      return violation;
    }
    if (frame.type === FrameType.End) route.endedToVisitor = true;
    route.connector.session.push({ ...frame, stream: route.clientStream });
    if (frame.type === FrameType.Reset) this.forget(route);
    else this.settle(route);
    return undefined;
  }

  /**
   * The streams of `connector` for its attachment, or undefined past MAX_SAVED_STREAMS (a wake
   * then finds none, and the connector connects again as a new session).
   */
  save(connector: Connector): SavedStreams | undefined {
    if (connector.streams.size > MAX_SAVED_STREAMS) return undefined;
    return Uint32Array.from(
      [...connector.streams.values()].flatMap((route) => [
        route.clientStream,
        route.agentStream,
        INITIAL_WINDOW - route.toAgent.available,
        INITIAL_WINDOW - route.toVisitor.available,
        (route.endedToAgent ? 1 : 0) | (route.endedToVisitor ? 2 : 0),
      ]),
    );
  }

  /** After a wake from hibernation: `connector`'s streams as `save` left them. */
  restore(connector: Connector, saved: SavedStreams): void {
    for (let i = 0; i + 4 < saved.length; i += 5) {
      const [clientStream = 0, agentStream = 0, toAgent = 0, toVisitor = 0, ends = 0] = saved.subarray(i, i + 5);
      const route: Joined = {
        kind: "joined",
        agentStream,
        connector,
        clientStream,
        toAgent: new SendCredit(),
        toVisitor: new SendCredit(),
        endedToAgent: (ends & 1) !== 0,
        endedToVisitor: (ends & 2) !== 0,
      };
      route.toAgent.take(toAgent);
      route.toVisitor.take(toVisitor);
      this.routes.set(agentStream, route);
      connector.streams.set(clientStream, route);
    }
  }

  /** Ends every stream of `connector` (its session ended): the agent hears a Reset for each. */
  endConnector(connector: Connector, why: string): void {
    for (const route of [...connector.streams.values()]) {
      this.agent()?.push({ type: FrameType.Reset, stream: route.agentStream, code: "cancelled", message: why });
      this.forget(route);
    }
  }

  /** Ends every stream (the agent's session ended): visitors hear a Reset, public ports close. */
  endAll(why: string): void {
    for (const route of [...this.routes.values()]) {
      if (route.kind === "piped") route.pipe.abort(why, false);
      else route.connector.session.push({ type: FrameType.Reset, stream: route.clientStream, code: "cancelled", message: why });
      this.routes.delete(route.agentStream);
      if (route.kind === "joined") route.connector.streams.delete(route.clientStream);
    }
  }

  /** Checks a frame against the credit its receiver gave; a grant is counted for the other way. */
  private check(frame: TcpFrame, forward: SendCredit, back: SendCredit, ended: boolean): string | undefined {
    switch (frame.type) {
      case FrameType.Data:
        if (ended) return "Data after End";
        return forward.take(frame.bytes.byteLength) === frame.bytes.byteLength
          ? undefined
          : `${frame.bytes.byteLength} bytes sent past the receiver's credit`;
      case FrameType.Credit:
        return back.grant(frame.bytes);
      case FrameType.End:
        return ended ? "a second End" : undefined;
      case FrameType.Reset:
        return undefined;
    }
  }

  private reset(route: Joined, code: ResetCode, message: string): void {
    this.agent()?.push({ type: FrameType.Reset, stream: route.agentStream, code, message });
    route.connector.session.push({ type: FrameType.Reset, stream: route.clientStream, code, message });
    this.forget(route);
  }

  /** Both directions ended: the route goes (Credit trailing it is ignored). */
  private settle(route: Joined): void {
    if (route.endedToAgent && route.endedToVisitor) this.forget(route);
  }

  private forget(route: Joined): void {
    this.routes.delete(route.agentStream);
    route.connector.streams.delete(route.clientStream);
  }
}
