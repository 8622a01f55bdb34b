// Flow control, one stream and one direction at a time: the sender holds a SendCredit, the
// receiver a ReceiveWindow, both starting at INITIAL_WINDOW. Bodies (Data), visitor WebSocket
// messages (WsMessage) and whatever else travels in bounded pieces use the same pair, so the
// rules are written once: a sender never sends past its credit, a receiver gives back exactly
// what it consumed, in CREDIT_BATCH lots, and a peer that breaks either rule is caught here.

import { CREDIT_BATCH, INITIAL_WINDOW, MAX_DATA_CHUNK } from "./limits.ts";

/**
 * How far past its credit a peer of an earlier version may send WsMessage pieces: until the
 * window was written once (issue 22), agents and relays sent a whole queued piece while any
 * credit was left, so up to MAX_DATA_CHUNK - 1 bytes beyond it. Receivers of pieces allow that
 * much (see {@link ReceiveWindow}); nothing sends past its credit any more.
 */
export const PIECE_OVERSHOOT = MAX_DATA_CHUNK - 1;

/**
 * The sending side of one stream's window: bytes the peer allowed, taken before sending.
 * A sender that only sends what {@link take} returned never exceeds what its peer allowed.
 */
export class SendCredit {
  private credit: number;

  /** @param window the peer's window: what it accepts before its first Credit frame. */
  constructor(private readonly window = INITIAL_WINDOW) {
    this.credit = window;
  }

  /** Bytes that may be sent now. */
  get available(): number {
    return this.credit;
  }

  /**
   * Takes credit for up to `want` bytes before they are sent.
   * @returns how many of them may go now: `want`, or less when credit is short (0: wait for a grant).
   */
  take(want: number): number {
    const taken = Math.max(0, Math.min(want, this.credit));
    this.credit -= taken;
    return taken;
  }

  /**
   * The peer granted `bytes` more (a Credit frame).
   * @returns undefined, or why the grant breaks the protocol: a peer can only give back what it
   * received, so credit past the window means it counted bytes it never got (a bug or an attack).
   */
  grant(bytes: number): string | undefined {
    if (this.credit + bytes > this.window) {
      return `credit of ${bytes} bytes would exceed the ${this.window}-byte window`;
    }
    this.credit += bytes;
    return undefined;
  }
}

/**
 * The receiving side of one stream's window: what the peer sent is checked against what it was
 * allowed as it arrives, and given back as credit once it is consumed (written on to its
 * reader), in batches of CREDIT_BATCH bytes: fewer frames, and never a trickle of tiny ones.
 * A reader that stops consuming stops the credit, and so the sender.
 */
export class ReceiveWindow {
  /** Bytes the peer may still send: the window, less what came, plus credit given back. */
  private allowed: number;
  /** Bytes received and not consumed yet. */
  private held = 0;
  /** Bytes consumed that the peer has not been credited for. */
  private consumed = 0;

  /**
   * @param window what the peer may send before the first Credit frame: its SendCredit's window.
   * @param tolerance how far past it a peer may go before that is a violation (see {@link PIECE_OVERSHOOT}).
   */
  constructor(
    window = INITIAL_WINDOW,
    private readonly tolerance = 0,
  ) {
    this.allowed = window;
  }

  /**
   * The peer sent `bytes` on this stream.
   * @returns undefined, or why that breaks the protocol: more than its credit allowed (the
   * receiver would have to hold what it never agreed to hold). The bytes are not counted then.
   */
  receive(bytes: number): string | undefined {
    if (bytes > this.allowed + this.tolerance) {
      return `${bytes} bytes arrived with credit for ${Math.max(0, this.allowed)}`;
    }
    this.allowed -= bytes;
    this.held += bytes;
    return undefined;
  }

  /**
   * `bytes` of what was received were consumed: the receiver's reader took them.
   * @returns the credit to grant the peer now in a Credit frame: 0 until a batch is full, then
   * every byte consumed since the last grant. Over a stream's life the credit granted plus
   * {@link pending} equals the bytes consumed.
   * @throws {RangeError} when more is consumed than was received (a bug in the caller).
   */
  consume(bytes: number): number {
    if (bytes > this.held) throw new RangeError(`consumed ${bytes} bytes of the ${this.held} received`);
    this.held -= bytes;
    this.consumed += bytes;
    if (this.consumed < CREDIT_BATCH) return 0;
    const grant = this.consumed;
    this.consumed = 0;
    this.allowed += grant;
    return grant;
  }

  /** Bytes consumed and not granted back yet (less than one batch). */
  get pending(): number {
    return this.consumed;
  }
}
