import { concatBytes, FrameBatch } from "./batch.ts";
import type { InvalidFrame } from "./codec.ts";
import { malformed } from "./errors.ts";
import { type Frame, FrameType } from "./frames.ts";
import { type UnackedLimit, unackedLimit } from "./limits.ts";

/**
 * Frames a peer has received may be acknowledged this long after the last of them at the
 * latest, when it has nothing else to send (acknowledgements ride on every message it sends).
 */
export const ACK_DELAY_MS = 100;

/** Messages whose parts average fewer bytes than this are joined into one buffer (see sent). */
const JOIN_BELOW = 1024;

/** One message as sent: its parts (see FrameBatch), its size, and the frames it spans. */
interface Sent {
  parts: Uint8Array[];
  size: number;
  start: number;
  end: number;
}

/**
 * One side of a session that outlives its connections (stream resumption): it numbers the
 * frames it sends and keeps each message until the peer acknowledges it, counts the frames it
 * receives, and after a reconnect sends again exactly what the peer had not received, in order.
 * The same on both transports and both sides. Acknowledgements (Ack frames) lead every message
 * sent while some are due, so an Ack always arrives before any Credit sent after it: what a side
 * keeps for the peer is never more than the credit the peer has not yet returned.
 *
 * Frames are counted after the handshake (Hello, Ready travel outside the session); Ack frames
 * are not counted, so that acknowledgements never call for acknowledgements, and a message of
 * Acks alone is not kept.
 *
 * What is kept has a hard bound (see unackedLimit), for every frame sent: a peer that provokes
 * answers and never acknowledges them would otherwise make this side keep them all. Past the
 * bound the session ends by itself (nothing more is kept or sent) and `onOverflow` says why.
 */
export class FrameSession {
  private readonly batch: FrameBatch;
  private kept: Sent[] = [];
  private keptSize = 0;
  private over = false;
  private sentFrames = 0;
  private ackedFrames = 0;
  private receivedFrames = 0;
  private toldFrames = 0;
  private writer: ((parts: Uint8Array[], size: number) => void) | undefined;
  private ackTimer: unknown;
  private acksInBatch = 0;
  /** Called when nothing is kept and nothing is to acknowledge (a side may persist its counts then). */
  onQuiescent: (() => void) | undefined;
  /**
   * Called once when the peer left more unacknowledged than `limit` allows, with why ("left
   * 125185 frames unacknowledged, past the limit of 125184"): the session has ended by then.
   * The side closes the connection (CloseCode.Unacknowledged) and fails the session's streams.
   */
  onOverflow: ((why: string) => void) | undefined;
  /** Called when an Ack let go of kept frames (a side that paused its input for them resumes). */
  onAcknowledged: (() => void) | undefined;

  /**
   * @param schedule runs a flush later in this turn (see FrameBatch).
   * @param counts where a side that lost its memory left off (see {@link snapshot}).
   * @param limit what may be kept for the peer at most (see unackedLimit).
   */
  constructor(
    schedule: (flush: () => void) => void,
    counts?: { sent: number; received: number },
    private readonly limit: UnackedLimit = unackedLimit(),
  ) {
    this.batch = new FrameBatch((parts, size, frames) => this.sent(parts, size, frames), schedule);
    if (counts) {
      this.sentFrames = this.ackedFrames = counts.sent;
      this.receivedFrames = this.toldFrames = counts.received;
    }
  }

  /** Frames received from the peer in this session. */
  get received(): number {
    return this.receivedFrames;
  }

  /** Bytes kept for the peer until it acknowledges them. */
  get keptBytes(): number {
    return this.keptSize;
  }

  /** Frames kept for the peer until it acknowledges them. */
  get keptFrames(): number {
    return this.over ? 0 : this.sentFrames - this.ackedFrames;
  }

  /** Frames kept for the peer or queued for it (Acks among them): what it has yet to acknowledge. */
  get outstandingFrames(): number {
    return this.keptFrames + this.batch.queued;
  }

  /** The session ended (see {@link end}): nothing more is sent or kept. */
  get ended(): boolean {
    return this.over;
  }

  /** Nothing kept and nothing to acknowledge: the counts alone describe the session. */
  get quiescent(): boolean {
    return this.kept.length === 0 && this.toldFrames === this.receivedFrames;
  }

  /** The counts a side needs to go on after losing its memory while quiescent. */
  snapshot(): { sent: number; received: number } {
    return { sent: this.sentFrames, received: this.receivedFrames };
  }

  /** Sends a frame (now, or on the next connection if there is none). */
  push(frame: Frame): void {
    if (this.over) return;
    if (this.toldFrames < this.receivedFrames && this.batch.empty) this.pushAck();
    this.batch.push(frame);
  }

  /**
   * A message from the peer, decoded (`total` frames in it, see decodeMessage's `counted`):
   * its Acks are applied here, the other frames counted and returned in order.
   * @throws {ProtocolError} for an Ack beyond what this side sent.
   */
  take(frames: (Frame | InvalidFrame)[], total: number): (Frame | InvalidFrame)[] {
    let acks = 0;
    const rest: (Frame | InvalidFrame)[] = [];
    for (const frame of frames) {
      if (frame.type === FrameType.Ack) {
        acks++;
        this.acknowledge(frame.received);
      } else {
        rest.push(frame);
      }
    }
    this.receive(total - acks);
    return rest;
  }

  /**
   * Frames from the peer, `count` of them however many were decoded (a frame of a type this
   * side does not know counts too), Ack frames left out.
   */
  receive(count: number): void {
    if (count === 0 || this.over) return;
    this.receivedFrames += count;
    if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = undefined;
        if (this.toldFrames < this.receivedFrames && this.writer) this.pushAck();
      }, ACK_DELAY_MS);
    }
  }

  /**
   * The peer has received `frames` frames: what they were is no longer kept. A count below
   * the last one is an old Ack sent again after a reconnect, and changes nothing.
   * @throws {ProtocolError} for a count beyond what this side sent.
   */
  acknowledge(frames: number): void {
    if (frames > this.sentFrames) malformed(`Ack of ${frames} frames, but only ${this.sentFrames} were sent`);
    if (frames <= this.ackedFrames) return;
    this.ackedFrames = frames;
    while (this.kept.length > 0 && this.kept[0]!.end <= frames) this.keptSize -= this.kept.shift()!.size;
    this.onAcknowledged?.();
    if (this.quiescent) this.onQuiescent?.();
  }

  /**
   * Whether the peer, having received `frames`, can go on from here (see {@link attach}): the
   * count must lie between what it acknowledged and what was sent, on a message boundary
   * (messages are received whole).
   */
  canResume(frames: number): boolean {
    if (frames < this.ackedFrames || frames > this.sentFrames) return false;
    return frames === this.sentFrames || this.kept.some((message) => message.start === frames);
  }

  /**
   * A connection carries the session now: what the peer had not received (it said it has
   * `peerReceived` frames) goes first, then what is sent from now on.
   * @throws {ProtocolError} when the count does not fit what was sent (see {@link canResume}).
   */
  attach(write: (parts: Uint8Array[], size: number) => void, peerReceived = this.ackedFrames): void {
    if (!this.canResume(peerReceived)) {
      malformed(`the peer received ${peerReceived} frames, which does not fit the ${this.sentFrames} sent`);
    }
    this.acknowledge(peerReceived);
    this.batch.flush();
    this.writer = write;
    for (const message of this.kept) write(message.parts, message.size);
    if (this.toldFrames < this.receivedFrames) this.pushAck();
  }

  /** The connection is gone: frames wait for the next one. */
  detach(): void {
    this.batch.flush();
    this.writer = undefined;
  }

  /** The session is over: nothing more is sent or kept. */
  end(): void {
    this.over = true;
    this.writer = undefined;
    this.kept = [];
    this.keptSize = 0;
    if (this.ackTimer !== undefined) clearTimeout(this.ackTimer as never);
    this.ackTimer = undefined;
  }

  /** Why what is kept is past the limit, or undefined while it is within. */
  private overLimit(): string | undefined {
    if (this.keptFrames > this.limit.frames) {
      return `left ${this.keptFrames} frames unacknowledged, past the limit of ${this.limit.frames}`;
    }
    if (this.keptSize > this.limit.bytes) {
      return `left ${this.keptSize} bytes unacknowledged, past the limit of ${this.limit.bytes}`;
    }
    return undefined;
  }

  private pushAck(): void {
    this.toldFrames = this.receivedFrames;
    this.acksInBatch++;
    this.batch.push({ type: FrameType.Ack, received: this.receivedFrames });
  }

  private sent(parts: Uint8Array[], size: number, frames: number): void {
    const counted = frames - this.acksInBatch;
    this.acksInBatch = 0;
    // A batch queued before the session ended, flushed after.
    if (this.over) return;
    // Small frames are kept joined, one buffer instead of a typed array each: measured on
    // workerd, 130,000 Resets kept as parts peaked the relay at 118 MiB, joined at 86 MiB.
    // Messages of body chunks are kept as they are, their payloads not copied (see FrameBatch).
    if (parts.length > 1 && size < parts.length * JOIN_BELOW) parts = [concatBytes(parts, size)];
    if (counted > 0) {
      const start = this.sentFrames;
      this.sentFrames += counted;
      this.kept.push({ parts, size, start, end: this.sentFrames });
      this.keptSize += size;
      const why = this.overLimit();
      if (why !== undefined) {
        this.end();
        this.onOverflow?.(why);
        return;
      }
    }
    this.writer?.(parts, size);
    if (counted === 0 && this.quiescent) this.onQuiescent?.();
  }
}
