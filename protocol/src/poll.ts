import { ProtocolError } from "./errors.ts";
import { MAX_MESSAGE_BYTES } from "./limits.ts";

/**
 * The answer to a long poll of the HTTPS transport. The relay sends its head at once and the
 * body when it has frames (or the wait is over), so that it notices an agent that went away;
 * that is why what would be headers travels at the start of the body:
 * `seq` (u32) the batch's number, `close` (u16, 0 if open), the close reason's length (u16)
 * and UTF-8 bytes, then the frames (a batch is numbered only when it has frames).
 */
export interface PollAnswer {
  seq: number;
  close: { code: number; reason: string } | undefined;
  frames: Uint8Array;
}

const PREFIX = 8;

/**
 * The query parameter with which an agent's POST asks to take frames: with
 * `?seq=<n>&take=1&ack=<a>&wait=<ms>` the POST is also a long poll (as `GET ?ack=<a>&wait=<ms>`),
 * and the relay answers it 200 with a PollAnswer, numbered and acknowledged like a GET's, once it
 * has applied the POST's frames: one exchange carries frames both ways. An agent asks only when
 * the relay's answer to the session's opening said `"take": true`; a POST without it is answered
 * 204 with no body, as by relays before it.
 */
export const TAKE_PARAM = "take";

export function encodePollAnswer(answer: PollAnswer): Uint8Array {
  const reason = new TextEncoder().encode(answer.close?.reason ?? "").subarray(0, 1024);
  const out = new Uint8Array(PREFIX + reason.byteLength + answer.frames.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, answer.seq);
  view.setUint16(4, answer.close?.code ?? 0);
  view.setUint16(6, reason.byteLength);
  out.set(reason, PREFIX);
  out.set(answer.frames, PREFIX + reason.byteLength);
  return out;
}

/** @throws {ProtocolError} "malformed-frame" for a truncated answer, "frame-too-large" above the limit. */
export function decodePollAnswer(bytes: Uint8Array): PollAnswer {
  if (bytes.byteLength < PREFIX) {
    throw new ProtocolError(
      "malformed-frame",
      `a poll answer of ${bytes.byteLength} bytes is shorter than its ${PREFIX}-byte prefix`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const code = view.getUint16(4);
  const reasonLength = view.getUint16(6);
  if (bytes.byteLength < PREFIX + reasonLength)
    throw new ProtocolError("malformed-frame", "a poll answer ends inside its close reason");
  const frames = bytes.subarray(PREFIX + reasonLength);
  if (frames.byteLength > MAX_MESSAGE_BYTES) {
    throw new ProtocolError(
      "frame-too-large",
      `a poll answer carries ${frames.byteLength} bytes of frames; the limit is ${MAX_MESSAGE_BYTES}`,
    );
  }
  const reason = new TextDecoder().decode(bytes.subarray(PREFIX, PREFIX + reasonLength));
  return { seq: view.getUint32(0), close: code ? { code, reason } : undefined, frames };
}

/** Largest poll answer: the prefix, a close reason, and MAX_MESSAGE_BYTES of frames. */
export const MAX_POLL_ANSWER = PREFIX + 1024 + MAX_MESSAGE_BYTES;
