import {
  decodeMessage,
  FrameSession,
  FrameType,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  UNACKED_CONTROL_BYTES,
  unackedLimit,
} from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { harness, reset } from "./_session.ts";

// The bound on what a session keeps for its peer until the peer acknowledges it, in process.

describe("what a session keeps unacknowledged", () => {
  it("ends once a peer that never acknowledges leaves more frames than the bound, and keeps nothing after", () => {
    const { session, messages, overflows, flush } = harness({ bytes: 1_000_000, frames: 100 });
    for (let i = 0; i < 60; i++) session.push(reset(i));
    flush();
    expect(session.keptFrames).toBe(60);
    for (let i = 0; i < 60; i++) session.push(reset(i));
    flush();
    expect(overflows).toEqual(["left 120 frames unacknowledged, past the limit of 100"]);
    expect(session.ended).toBe(true);
    expect(session.keptFrames).toBe(0);
    expect(session.keptBytes).toBe(0);
    // The message past the bound was not sent, nor anything after it.
    expect(messages).toHaveLength(1);
    session.push(reset(1));
    flush();
    expect(messages).toHaveLength(1);
    expect(overflows).toHaveLength(1);
  });

  it("ends once the bytes kept pass the bound, whatever the frames", () => {
    const { session, overflows, flush } = harness({ bytes: 10_000, frames: 1000 });
    for (let i = 0; i < 3; i++) {
      session.push({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(4000) });
      flush();
    }
    expect(overflows).toHaveLength(1);
    expect(overflows[0]).toMatch(/^left 120\d\d bytes unacknowledged, past the limit of 10000$/);
  });

  it("keeps a peer that acknowledges late, as long as what it leaves stays within the bound", () => {
    const { session, messages, overflows, flush } = harness({ bytes: 1_000_000, frames: 100 });
    let received = 0;
    for (let round = 0; round < 100; round++) {
      for (let i = 0; i < 40; i++) session.push(reset(i));
      flush();
      // Acknowledges all but the last message it got: 80 frames out at most.
      session.acknowledge(received);
      received += decodeMessage(messages.at(-1)!).length;
    }
    expect(overflows).toEqual([]);
    expect(session.keptFrames).toBe(40);
    session.acknowledge(received);
    expect(session.keptFrames).toBe(0);
    expect(session.keptBytes).toBe(0);
  });

  it("counts what is kept while no connection carries the session too", () => {
    const { session, overflows, flush } = harness({ bytes: 1_000_000, frames: 10 });
    session.detach();
    for (let i = 0; i < 11; i++) session.push(reset(i));
    flush();
    expect(overflows).toEqual(["left 11 frames unacknowledged, past the limit of 10"]);
  });

  it("keeps small frames joined in one buffer, and bulk data as it was sent", () => {
    const written: Uint8Array[][] = [];
    const pending: (() => void)[] = [];
    const session = new FrameSession((flush) => pending.push(flush));
    session.attach((parts) => written.push(parts));
    for (let i = 0; i < 10; i++) session.push(reset(i));
    for (const flush of pending.splice(0)) flush();
    const chunk = new Uint8Array(MAX_DATA_CHUNK);
    session.push({ type: FrameType.Data, stream: 1, bytes: chunk });
    session.push({ type: FrameType.End, stream: 1 });
    for (const flush of pending.splice(0)) flush();
    expect(written[0]).toHaveLength(1);
    expect(decodeMessage(written[0]![0]!)).toHaveLength(10);
    // The chunk is not copied: it is one of the message's parts.
    expect(written[1]!.some((part) => part === chunk)).toBe(true);
  });

  it("bounds a tunnel's session by its streams' windows, with headroom for their heads and control frames", () => {
    const limit = unackedLimit(100);
    expect(limit).toEqual(unackedLimit());
    // Every stream's window of Data, a head each, and then some.
    expect(limit.bytes).toBeGreaterThanOrEqual(100 * (INITIAL_WINDOW + 64 * 1024) + UNACKED_CONTROL_BYTES);
    expect(limit.bytes).toBe(122_159_104);
    expect(limit.frames).toBe(125_184);
    expect(unackedLimit(2).bytes).toBeLessThan(limit.bytes);
  });
});
