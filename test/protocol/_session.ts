import { concatBytes, type Frame, FrameSession, FrameType, type UnackedLimit } from "@burrow/protocol";

/** A session whose batches are flushed when the test says, writing to `messages`. */
export function harness(limit: UnackedLimit) {
  const pending: (() => void)[] = [];
  const session = new FrameSession((flush) => pending.push(flush), undefined, limit);
  const messages: Uint8Array[] = [];
  const overflows: string[] = [];
  session.onOverflow = (why) => overflows.push(why);
  session.attach((parts, size) => messages.push(concatBytes(parts, size)));
  return {
    session,
    messages,
    overflows,
    /** Sends what was pushed, as one message. */
    flush: () => {
      for (const flush of pending.splice(0)) flush();
    },
  };
}

/** What the relay answers a frame of a stream that does not exist with. */
export const reset = (stream: number): Frame => ({
  type: FrameType.Reset,
  stream,
  code: "cancelled",
  message: "this stream is no longer open",
});
