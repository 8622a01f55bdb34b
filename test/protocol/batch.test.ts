import { concatBytes, decodeFrames, type Frame, FrameBatch, FrameType } from "@burrow/protocol";
import { describe, expect, it } from "vitest";

// Tiny body chunks of one stream, queued in a row, leave as one Data frame: every frame sent is
// kept until the peer acknowledges it, and that is bounded in frames (unackedLimit).

/** A batch flushed by hand; returns the messages it wrote, decoded, with their frame counts. */
function batch(): { batch: FrameBatch; messages: { frames: Frame[]; counted: number }[] } {
  const messages: { frames: Frame[]; counted: number }[] = [];
  const batch = new FrameBatch(
    (parts, size, frames) => messages.push({ frames: decodeFrames(concatBytes(parts, size)), counted: frames }),
    () => {},
  );
  return { batch, messages };
}

describe("FrameBatch", () => {
  it("joins 5,000 1-byte chunks of a stream into Data frames of up to 16 KiB, byte for byte, counting frames as sent", () => {
    const { batch: frames, messages } = batch();
    const sent = new Uint8Array(5000).map((_, i) => i % 251);
    for (let i = 0; i < sent.byteLength; i++) {
      const chunk = sent.slice(i, i + 1);
      frames.push({ type: FrameType.Data, stream: 5, bytes: chunk });
      chunk[0] = 0; // the sender's buffer is its own again once pushed
    }
    frames.flush();
    expect(messages).toHaveLength(1);
    const [{ frames: got, counted }] = messages as [{ frames: Frame[]; counted: number }];
    expect(got).toEqual([{ type: FrameType.Data, stream: 5, bytes: sent }]);
    expect(counted).toBe(1);
  });

  it("keeps order and streams apart: chunks of another stream, or any other frame between, start a new Data frame", () => {
    const { batch: frames, messages } = batch();
    const one = (n: number) => new Uint8Array([n]);
    frames.push({ type: FrameType.Data, stream: 1, bytes: one(1) });
    frames.push({ type: FrameType.Data, stream: 1, bytes: one(2) });
    frames.push({ type: FrameType.Data, stream: 2, bytes: one(3) });
    frames.push({ type: FrameType.Data, stream: 1, bytes: one(4) });
    frames.push({ type: FrameType.End, stream: 1 });
    frames.push({ type: FrameType.Data, stream: 2, bytes: one(5) });
    frames.push({ type: FrameType.Data, stream: 2, bytes: new Uint8Array(2048) });
    frames.flush();
    const [{ frames: got, counted }] = messages as [{ frames: Frame[]; counted: number }];
    expect(got).toEqual([
      { type: FrameType.Data, stream: 1, bytes: new Uint8Array([1, 2]) },
      { type: FrameType.Data, stream: 2, bytes: new Uint8Array([3]) },
      { type: FrameType.Data, stream: 1, bytes: new Uint8Array([4]) },
      { type: FrameType.End, stream: 1 },
      { type: FrameType.Data, stream: 2, bytes: new Uint8Array([5]) },
      { type: FrameType.Data, stream: 2, bytes: new Uint8Array(2048) },
    ]);
    expect(counted).toBe(got.length);
  });
});
