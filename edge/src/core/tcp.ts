import {
  type CreditFrame,
  type DataFrame,
  type EndFrame,
  FrameType,
  INITIAL_WINDOW,
  MAX_CONNECT_STREAM_ID,
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

import { visitorKey } from "./cidr.ts";
import type { AgentSession } from "./session.ts";

// TCP tunnels' streams on the relay: a visitor's `agent connect` opens streams on its own
// session (its ids), each joined here to a stream of the agent's session (the relay's ids).
// The relay holds no bytes of them: Data, End, Reset and Credit pass from one session to the
// other with the stream id changed, so what is in flight is what the two ends' windows allow.
// The relay still checks each Data against the credit its receiver gave (the SendCredit pairs
// below): a sender that ignores credit is reset here, before its bytes cost the other session.
// A self-hosted relay's public TCP port ends the stream here instead, in a TcpPipe. Runtime-free.
//
// A Durable Object hibernates while its links are quiet (an idle ssh session), and wakes with
// nothing in memory. So the agent's id of a connector's stream is computed, not stored: each
// connector has a slot (in its link's attachment), and its stream c is CONNECTOR_IDS + slot *
// SLOT_SIZE + c. After a wake a frame of either side finds its route again from its id alone;
// a route is made anew (credit full, as the relay checks it) on the first frame that needs it.

/** The agent's ids of connectors' streams: the upper half (HTTP streams and public ports use the lower). */
export const CONNECTOR_IDS = 0x8000_0000;
/** Ids per connector slot: MAX_CONNECT_STREAM_ID + 1. */
const SLOT_SIZE = MAX_CONNECT_STREAM_ID + 1;
/** Connector slots per tunnel: its visitors' connects open at once, at most. */
export const CONNECTOR_SLOTS = (0x1_0000_0000 - CONNECTOR_IDS) / SLOT_SIZE;

/** A connector: a visitor's `agent connect` session (an AgentSession over its link, see tunnel-connect.ts). */
export interface Connector {
  readonly session: AgentSession;
  /** Its block of the agent's stream ids (see CONNECTOR_IDS); kept in its link's attachment. */
  readonly slot: number;
  /** Found again after a wake from hibernation: its routes are made anew as frames come. */
  readonly restored: boolean;
  /** The visitor's address as the relay saw it ("" unknown). */
  readonly from: string;
  /** Its streams, by its own ids. */
  readonly streams: Map<number, Joined>;
}

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
  /**
   * Made anew after a wake (see revive), its credit full: a grant that would take it past the
   * window counts up to the window only. The bytes granted may have been sent before the wake,
   * and the ends' own credit is never more than the relay's, so the check still bounds them.
   */
  readonly revived: boolean;
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
    /** A fresh stream id on the agent's session (the lower half: public ports). */
    private readonly nextId: () => number,
    /** The connector in `slot`, found again from its link after a wake. */
    private readonly connectorAt: (slot: number) => Connector | undefined,
  ) {}

  /** Whether `stream` of the agent's session is a TCP stream here, or may be one after a wake. */
  carries(stream: number): boolean {
    return stream >= CONNECTOR_IDS || this.routes.has(stream);
  }

  get size(): number {
    return this.routes.size;
  }

  has(agentStream: number): boolean {
    return this.routes.has(agentStream);
  }

  /** Streams visitor `from` holds (a visitorKey: an IPv6 visitor is its /64), for MAX_STREAMS_PER_VISITOR. */
  heldBy(from: string | undefined): number {
    if (from === undefined) return 0;
    let held = 0;
    for (const route of this.routes.values()) {
      if (visitorKey(route.kind === "joined" ? route.connector.from : route.from) === from) held++;
    }
    return held;
  }

  /** The connector opened stream `clientStream`: the agent is asked to connect its target. */
  open(connector: Connector, clientStream: number): string | undefined {
    if (clientStream < 1 || clientStream > MAX_CONNECT_STREAM_ID) {
      return `a connect's stream ids are 1 to ${MAX_CONNECT_STREAM_ID}, not ${clientStream}`;
    }
    if (connector.streams.has(clientStream)) return `stream ${clientStream} is open already`;
    const agent = this.agent();
    if (!agent) return undefined; // the caller refused it already
    const route = this.join(connector, clientStream);
    agent.push({ type: FrameType.Open, stream: route.agentStream, from: connector.from });
    return undefined;
  }

  private join(connector: Connector, clientStream: number, revived = false): Joined {
    const route: Joined = {
      kind: "joined",
      agentStream: CONNECTOR_IDS + connector.slot * SLOT_SIZE + clientStream,
      connector,
      clientStream,
      toAgent: new SendCredit(),
      toVisitor: new SendCredit(),
      endedToAgent: false,
      endedToVisitor: false,
      revived,
    };
    this.routes.set(route.agentStream, route);
    connector.streams.set(clientStream, route);
    return route;
  }

  /** The route of a stream that was open when the relay hibernated, made anew. */
  private revive(connector: Connector | undefined, clientStream: number): Joined | undefined {
    if (!connector?.restored || clientStream < 1 || clientStream > MAX_CONNECT_STREAM_ID) return undefined;
    return this.join(connector, clientStream, true);
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
    const route =
      connector.streams.get(frame.stream) ?? (frame.type === FrameType.Reset ? undefined : this.revive(connector, frame.stream));
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
    const violation = this.check(frame, route.toAgent, route.toVisitor, route.endedToAgent, route.revived);
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
    const id = frame.stream;
    const route =
      this.routes.get(id) ??
      (id >= CONNECTOR_IDS && frame.type !== FrameType.Reset
        ? this.revive(this.connectorAt(Math.floor((id - CONNECTOR_IDS) / SLOT_SIZE)), (id - CONNECTOR_IDS) % SLOT_SIZE)
        : undefined);
    if (!route) return "gone";
    if (route.kind === "piped") {
      const violation = route.pipe.receive(frame);
      if (violation) route.pipe.abort(violation);
      return violation;
    }
    const violation = this.check(frame, route.toVisitor, route.toAgent, route.endedToVisitor, route.revived);
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
  private check(frame: TcpFrame, forward: SendCredit, back: SendCredit, ended: boolean, revived: boolean): string | undefined {
    switch (frame.type) {
      case FrameType.Data:
        if (ended) return "Data after End";
        return forward.take(frame.bytes.byteLength) === frame.bytes.byteLength
          ? undefined
          : `${frame.bytes.byteLength} bytes sent past the receiver's credit`;
      case FrameType.Credit:
        return back.grant(revived ? Math.min(frame.bytes, INITIAL_WINDOW - back.available) : frame.bytes);
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
