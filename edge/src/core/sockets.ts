import {
  closeReason,
  concatBytes,
  FrameType,
  MAX_DATA_CHUNK,
  MAX_WS_MESSAGE,
  ReceiveWindow,
  SendCredit,
  type WsCloseFrame,
  type WsMessageFrame,
} from "@burrow/protocol";
import { isTeardownNoise } from "./errors.ts";
import type { Link, LinkStore } from "./host.ts";
import { ByteBudget } from "./limits.ts";
import type { AgentSession } from "./session.ts";
import type { SendFrame, Verdict } from "./streams.ts";

/** The hibernation tag every visitor socket carries, so they are counted without reading attachments. */
const VISITOR_TAG = "visitor";

/** What a visitor's WebSocket remembers across hibernation. */
export interface VisitorAttachment {
  phase: "visitor";
  stream: number;
}

/** Pieces of a message still arriving, per stream. */
interface Partial {
  binary: boolean;
  parts: Uint8Array[];
  size: number;
}

/**
 * What a queued piece costs beyond its bytes, against MAX_WAITING_WS_BYTES, the tunnel's bound
 * on what waits for the origin: its object, frame fields and array slot (about 100-150 bytes in V8).
 * Without it a visitor sending 1-byte messages to an origin that grants no credit, or during a
 * cut, would hold MAX_WAITING_WS_BYTES of messages in objects a hundred times that size.
 */
const QUEUED_PIECE_COST = 128;

/** Visitor-to-origin pieces waiting for the agent's credit, per stream. */
interface Outbound {
  readonly credit: SendCredit;
  queue: WsMessageFrame[];
  queued: number;
  /** Waiting for the session to take input again (see flush). */
  parked: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Visitor WebSockets carried as streams on the agent's connection. The relay ends the visitor's
 * WebSocket itself (Hibernation API, so an idle socket costs nothing) and the agent opens its
 * own to the origin; messages travel between them as WsMessage pieces, closes as WsClose.
 *
 * Workers WebSockets have no backpressure: the relay cannot slow a visitor down, so messages
 * the agent has no credit for wait here, up to MAX_WS_MESSAGE; and it forwards the origin's
 * messages to the visitor as they complete, crediting the agent for each piece on arrival.
 */
export class SocketRelay {
  private readonly partial = new Map<number, Partial>();
  private readonly outbound = new Map<number, Outbound>();
  /** The origin's message pieces taken in, against the agent's credit, per stream. */
  private readonly inbound = new Map<number, ReceiveWindow>();
  /** Bytes of visitors' messages waiting here for the agent's credit, on all sockets. */
  private readonly waiting: ByteBudget;

  constructor(
    private readonly links: LinkStore,
    private readonly send: SendFrame,
    waitingBytes: number,
  ) {
    this.waiting = new ByteBudget(waitingBytes);
  }

  /**
   * The origin accepted the upgrade: hand the visitor its end of a new WebSocket, tagged with
   * whom it counts for (see visitorKey), so its share is counted across hibernation too.
   */
  accept(id: number, protocol: string | null, visitor: string | undefined): Response {
    const tags = visitor === undefined ? [VISITOR_TAG, tag(id)] : [VISITOR_TAG, tag(id), fromTag(visitor)];
    const { link, response } = this.links.upgrade(tags, protocol ? { "Sec-WebSocket-Protocol": protocol } : undefined);
    link.serializeAttachment({ phase: "visitor", stream: id } satisfies VisitorAttachment);
    return response;
  }

  /** A message from the visitor: pieces to the agent, as far as its credit goes. */
  fromVisitor(agent: AgentSession, visitor: Link, id: number, message: string | ArrayBuffer): void {
    const binary = typeof message !== "string";
    const bytes = binary ? new Uint8Array(message) : encoder.encode(message);
    const out = this.outboundOf(id);
    if (out.queued + bytes.byteLength > MAX_WS_MESSAGE) {
      this.close(visitor, 1009, `more than ${MAX_WS_MESSAGE} bytes are waiting for the origin; slow down`);
      this.send(agent, { type: FrameType.WsClose, stream: id, code: 1001, reason: "the visitor sent too much too fast" });
      return;
    }
    // All visitors' waiting messages together stay within what the Durable Object can hold.
    const pieces = Math.max(1, Math.ceil(bytes.byteLength / MAX_DATA_CHUNK));
    if (!this.waiting.take(bytes.byteLength + pieces * QUEUED_PIECE_COST)) {
      this.close(visitor, 1013, "the tunnel's origin is not keeping up with its visitors; try again later");
      this.send(agent, { type: FrameType.WsClose, stream: id, code: 1001, reason: "the relay holds too much for this tunnel" });
      this.forget(id);
      return;
    }
    for (let offset = 0; offset < bytes.byteLength || offset === 0; offset += MAX_DATA_CHUNK) {
      const piece = bytes.subarray(offset, offset + MAX_DATA_CHUNK);
      const final = offset + MAX_DATA_CHUNK >= bytes.byteLength;
      out.queue.push({ type: FrameType.WsMessage, stream: id, binary, final, bytes: piece });
      out.queued += piece.byteLength;
      if (final) break;
    }
    this.flush(agent, out);
  }

  /** Visitor WebSockets open now (for the per-tunnel stream limit). */
  get count(): number {
    return this.links.byTag(VISITOR_TAG).length;
  }

  /** Visitor WebSockets open now of one visitor (for its share). */
  heldBy(visitor: string | undefined): number {
    return visitor === undefined ? 0 : this.links.byTag(fromTag(visitor)).length;
  }

  /** The agent may send `bytes` more of the visitor's messages. */
  granted(agent: AgentSession, id: number, bytes: number): Verdict {
    // Only for a socket that exists: credit for made-up ids must not leave entries behind.
    if (!this.visitor(id)) return "gone";
    const out = this.outboundOf(id);
    const violation = out.credit.grant(bytes);
    if (violation) return { violation };
    this.flush(agent, out);
    return "ok";
  }

  /** A piece of the origin's message: the visitor gets it once it is whole. */
  fromAgent(agent: AgentSession, frame: WsMessageFrame): Verdict {
    const visitor = this.visitor(frame.stream);
    if (!visitor) return "gone";
    let window = this.inbound.get(frame.stream);
    if (!window) {
      // Credit goes back as pieces arrive (see below), so an agent is never less than a window
      // less a batch from its limit: the piece an earlier agent sends past its credit (see
      // PIECE_OVERSHOOT) is within it.
      window = new ReceiveWindow();
      this.inbound.set(frame.stream, window);
    }
    const overrun = window.receive(frame.bytes.byteLength);
    if (overrun) return { violation: `more of the origin's messages than its credit allows (${overrun})` };
    const partial = this.partial.get(frame.stream) ?? { binary: frame.binary, parts: [], size: 0 };
    partial.parts.push(frame.bytes);
    partial.size += frame.bytes.byteLength;
    if (partial.size > MAX_WS_MESSAGE) {
      this.partial.delete(frame.stream);
      this.close(visitor, 1009, `the origin's message is over ${MAX_WS_MESSAGE} bytes`);
      this.send(agent, { type: FrameType.WsClose, stream: frame.stream, code: 1009, reason: "message too big for the tunnel" });
      return "ok";
    }
    // Workers cannot send a message in fragments, so the piece waits here for the rest, and the
    // agent gets credit for it on arrival (in CREDIT_BATCH lots): waiting for the whole message
    // would deadlock any message bigger than the window. MAX_WS_MESSAGE bounds what this holds.
    const credit = window.consume(frame.bytes.byteLength);
    if (credit > 0) this.send(agent, { type: FrameType.Credit, stream: frame.stream, bytes: credit });
    if (!frame.final) {
      this.partial.set(frame.stream, partial);
      return "ok";
    }
    this.partial.delete(frame.stream);
    const whole = partial.parts.length === 1 ? partial.parts[0]! : concatBytes(partial.parts, partial.size);
    try {
      visitor.send(partial.binary ? whole : decoder.decode(whole));
    } catch (error) {
      if (!isTeardownNoise(error)) console.error(`stream ${frame.stream}: sending to the visitor failed`, error);
    }
    return "ok";
  }

  /** The origin closed: close the visitor's socket the same way. */
  closedByOrigin(frame: WsCloseFrame): boolean {
    const visitor = this.visitor(frame.stream);
    if (!visitor) return false;
    this.forget(frame.stream);
    // 1005 (no code) and 1006 (connection broke) must never be sent (RFC 6455 section 7.4.1).
    if (frame.code === 1005) this.close(visitor, 1000, frame.reason);
    else if (frame.code === 1006) this.close(visitor, 1011, "the origin's connection broke");
    else this.close(visitor, frame.code, frame.reason);
    return true;
  }

  /** The visitor closed (or its connection broke): the agent closes the origin's socket. */
  closedByVisitor(agent: AgentSession | undefined, id: number, code: number, reason: string): void {
    this.forget(id);
    if (agent)
      this.send(agent, { type: FrameType.WsClose, stream: id, code: code >= 1000 && code <= 4999 ? code : 1006, reason });
  }

  /** The agent is gone: every visitor socket it carried closes. */
  closeAll(reason: string): void {
    for (const socket of this.links.byTag(VISITOR_TAG)) {
      const attachment = socket.deserializeAttachment() as { phase: string } | null;
      if (attachment?.phase !== "visitor") continue;
      this.forget((attachment as VisitorAttachment).stream);
      this.close(socket, 1011, reason);
    }
  }

  private visitor(id: number): Link | undefined {
    return this.links.byTag(tag(id))[0];
  }

  private outboundOf(id: number): Outbound {
    let out = this.outbound.get(id);
    if (!out) {
      out = { credit: new SendCredit(), queue: [], queued: 0, parked: false };
      this.outbound.set(id, out);
    }
    return out;
  }

  /**
   * Sends the queued pieces the agent has credit for, while its session takes input (see
   * AgentSession.takesInput): during a cut they wait here, within the same byte bounds, instead
   * of becoming one kept frame each; the session's return sends them on. The piece where the
   * credit ends is cut there (final: false); its rest waits, the same message's next piece.
   */
  private flush(agent: AgentSession, out: Outbound): void {
    while (out.queue.length > 0 && out.credit.available > 0 && agent.takesInput) {
      const piece = out.queue[0]!;
      const size = out.credit.take(piece.bytes.byteLength);
      out.queued -= size;
      if (size === piece.bytes.byteLength) {
        out.queue.shift();
        this.waiting.give(size + QUEUED_PIECE_COST);
        this.send(agent, piece);
      } else {
        this.waiting.give(size);
        this.send(agent, { ...piece, final: false, bytes: piece.bytes.subarray(0, size) });
        out.queue[0] = { ...piece, bytes: piece.bytes.subarray(size) };
      }
    }
    if (out.queue.length > 0 && out.credit.available > 0 && !out.parked) {
      out.parked = true;
      agent.whenTakesInput(() => {
        out.parked = false;
        this.flush(agent, out);
      });
    }
  }

  private forget(id: number): void {
    this.partial.delete(id);
    this.inbound.delete(id);
    const out = this.outbound.get(id);
    if (!out) return;
    this.waiting.give(out.queued + out.queue.length * QUEUED_PIECE_COST);
    // A flush parked for the session's return (see flush) finds nothing left to send.
    out.queue = [];
    out.queued = 0;
    this.outbound.delete(id);
  }

  private close(socket: Link, code: number, reason: string): void {
    try {
      socket.close(code, closeReason(reason));
    } catch (error) {
      if (!isTeardownNoise(error)) console.warn("closing a visitor socket failed", error);
    }
  }
}

/**
 * The hibernation tag of a visitor's sockets. Tags are at most 256 bytes; a key is at most an
 * IPv6 /64's 24 characters, except for an address the relay could not parse (a forged
 * CF-Connecting-IP under wrangler dev), kept to 200.
 */
function fromTag(visitor: string): string {
  return `from:${visitor.replace(/[^\x21-\x7e]/g, "?").slice(0, 200)}`;
}

/** The hibernation tag that finds a visitor socket by its stream id. */
function tag(id: number): string {
  return `stream:${id}`;
}
