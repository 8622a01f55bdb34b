import { encodeFrame, FrameType } from "@burrow/protocol";
import type { RawAgent } from "./_raw-agent.ts";

// An agent that makes the relay send frames and decides when (if ever) to acknowledge them:
// each End for a stream that does not exist is answered with one Reset, a frame of the
// relay's session, so the count of frames the relay keeps for it is known exactly.

/** Frames of the relay's session this raw agent received (Acks are outside the count). */
export function counted(agent: RawAgent): number {
  return agent.frames.filter((frame) => frame.type !== FrameType.Ack).length;
}

/** Sends, as one message, `ends` End frames for a stream that was never opened (and an Ack of `ack` first, if given). */
export function provoke(agent: RawAgent, ends: number, ack?: number): void {
  const end = encodeFrame({ type: FrameType.End, stream: 7 });
  const head = ack === undefined ? new Uint8Array(0) : encodeFrame({ type: FrameType.Ack, received: ack });
  const message = new Uint8Array(head.byteLength + end.byteLength * ends);
  message.set(head, 0);
  for (let i = 0; i < ends; i++) message.set(end, head.byteLength + i * end.byteLength);
  agent.socket.send(message);
}

/**
 * Waits until the relay's session frames received reach `count`, or the connection closes.
 * @returns whether they did.
 */
export async function receivedAll(agent: RawAgent, count: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let closed = false;
  void agent.closed.then(() => {
    closed = true;
  });
  while (counted(agent) < count) {
    if (closed) return false;
    if (Date.now() > deadline) throw new Error(`${counted(agent)} of ${count} frames from the relay within ${timeoutMs / 1000}s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}
