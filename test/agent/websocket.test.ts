// The agent's own RFC 6455 client (agent/src/net/websocket.ts), fed crafted bytes over real TCP
// in the spirit of websockets/ws's test/receiver.test.js: each violation must fail the
// connection with the code ws would use, and a close must wait for the peer's close.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLOSE_TIMEOUT_MS } from "../../agent/src/net/websocket.ts";
import { closePayload, frame, type Pair, PeerServer } from "../_ws-peer.ts";

const Op = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;

let server: PeerServer;

beforeAll(async () => {
  server = await PeerServer.start();
});

afterAll(async () => {
  await server?.close();
});

/** Writes `bytes` as the server, then expects the client to fail with `code`. */
async function expectFailure(bytes: Buffer[], code: number): Promise<Pair> {
  const pair = await server.pair();
  pair.peer.write(...bytes);
  expect(await pair.peer.closeCode()).toBe(code);
  expect((await pair.closed).code).toBe(code);
  // Failing ends the connection: the client's FIN follows its close frame.
  await pair.peer.ended;
  expect(pair.messages).toEqual([]);
  expect(pair.closeCalls()).toBe(1);
  return pair;
}

describe("a frame that breaks RFC 6455 fails the connection", () => {
  it.each([
    ["RSV1", 4],
    ["RSV2", 2],
    ["RSV3", 1],
  ])("with 1002 when %s is set, since no extension was negotiated", async (_, rsv) => {
    await expectFailure([frame(Op.Text, "hi", { rsv })], 1002);
  });

  it.each([3, 7, 11, 15])("with 1002 for the unknown opcode %i", async (opcode) => {
    await expectFailure([frame(opcode, "x")], 1002);
  });

  it("with 1002 for a fragmented ping, which is not answered", async () => {
    const pair = await expectFailure([frame(Op.Ping, "p", { fin: false })], 1002);
    expect(pair.peer.frames.map((f) => f.opcode)).toEqual([Op.Close]);
  });

  it("with 1002 for a control frame of 126 bytes", async () => {
    await expectFailure([frame(Op.Ping, Buffer.alloc(126))], 1002);
  });

  it("with 1002 for a close frame whose payload is 1 byte", async () => {
    await expectFailure([frame(Op.Close, Buffer.from([3]))], 1002);
  });

  it("with 1002 for a continuation when no message is open", async () => {
    await expectFailure([frame(Op.Continuation, "stray")], 1002);
  });

  it("with 1002 for a text frame inside an open binary message", async () => {
    await expectFailure([frame(Op.Binary, "a", { fin: false }), frame(Op.Text, "b"), frame(Op.Continuation, "c")], 1002);
  });

  it("with 1002 for a binary frame inside an open text message", async () => {
    await expectFailure([frame(Op.Text, "a", { fin: false }), frame(Op.Binary, "b")], 1002);
  });

  it("with 1002 for a masked frame from the server", async () => {
    await expectFailure([frame(Op.Text, "masked", { mask: true })], 1002);
  });

  it("with 1002 for a 64-bit length whose high bit is set", async () => {
    const bad = frame(Op.Binary, Buffer.alloc(0), { encoding: 64 });
    bad[2] = 0x80;
    await expectFailure([bad], 1002);
  });

  // ws's isValidStatusCode: 1000-1014 except 1004-1006, and 3000-4999.
  it.each([0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])(
    "with 1002 for a close frame carrying code %i",
    async (code) => {
      await expectFailure([frame(Op.Close, closePayload(code))], 1002);
    },
  );

  it("with 1007 for a text message that is not UTF-8", async () => {
    await expectFailure([frame(Op.Text, Buffer.from([0x68, 0xc3, 0x28]))], 1007);
  });

  it("with 1007 for a fragmented text message that is not UTF-8 once joined", async () => {
    await expectFailure([frame(Op.Text, Buffer.from([0xf0, 0x9f]), { fin: false }), frame(Op.Continuation, "ab")], 1007);
  });

  it("with 1007 for an overlong UTF-8 encoding", async () => {
    await expectFailure([frame(Op.Text, Buffer.from([0xc0, 0xaf]))], 1007);
  });

  it("with 1007 for a close reason that is not UTF-8", async () => {
    await expectFailure([frame(Op.Close, closePayload(1000, Buffer.from([0xff, 0xfe])))], 1007);
  });

  it("with 1009 for a frame announcing more than 4 MiB, before its bytes come", async () => {
    // Only the header is sent: the length alone is enough to refuse it.
    const header = frame(Op.Binary, Buffer.alloc(0), { length: 4 * 1024 * 1024 + 1, encoding: 64 });
    await expectFailure([header], 1009);
  });

  it("with 1009 for a message whose fragments together exceed 4 MiB, the last one final", async () => {
    const mib = Buffer.alloc(1024 * 1024, 7);
    const fragments = [
      frame(Op.Binary, mib, { fin: false }),
      frame(Op.Continuation, mib, { fin: false }),
      frame(Op.Continuation, mib, { fin: false }),
      frame(Op.Continuation, mib, { fin: false }),
      frame(Op.Continuation, "x"),
    ];
    await expectFailure(fragments, 1009);
  });

  it("with a close frame whose reason names the violation", async () => {
    const pair = await expectFailure([frame(Op.Continuation, "stray")], 1002);
    const close = pair.peer.frames.find((f) => f.opcode === Op.Close)!;
    expect(close.masked).toBe(true);
    expect(close.payload.subarray(2).toString()).toMatch(/continuation/);
    expect((await pair.closed).reason).toMatch(/continuation/);
  });

  it("and ignores every frame after the bad one", async () => {
    const pair = await expectFailure([frame(Op.Text, "x", { rsv: 4 }), frame(Op.Ping, "after"), frame(Op.Text, "after")], 1002);
    expect(pair.peer.frames.map((f) => f.opcode)).toEqual([Op.Close]);
  });
});

describe("valid frames", () => {
  it("reassemble a fragmented text message, a character split across fragments", async () => {
    const pair = await server.pair();
    const snake = Buffer.from("🐍");
    pair.peer.write(
      frame(Op.Text, Buffer.concat([Buffer.from("a"), snake.subarray(0, 1)]), { fin: false }),
      frame(Op.Continuation, snake.subarray(1, 3), { fin: false }),
      frame(Op.Continuation, Buffer.alloc(0), { fin: false }),
      frame(Op.Continuation, Buffer.concat([snake.subarray(3), Buffer.from("z")])),
    );
    await expect.poll(() => pair.messages).toEqual(["a🐍z"]);
  });

  it("reassemble a fragmented binary message, then take the next one on its own", async () => {
    const pair = await server.pair();
    pair.peer.write(
      frame(Op.Binary, Buffer.from([1, 2]), { fin: false }),
      frame(Op.Continuation, Buffer.from([3]), { fin: false }),
      frame(Op.Continuation, Buffer.from([4, 5])),
      frame(Op.Binary, Buffer.from([6])),
    );
    await expect.poll(() => pair.messages.length).toBe(2);
    expect(pair.messages.map((m) => [...(m as Uint8Array)])).toEqual([[1, 2, 3, 4, 5], [6]]);
  });

  it("answer pings between fragments with pongs carrying their payload", async () => {
    const pair = await server.pair();
    pair.peer.write(
      frame(Op.Text, "he", { fin: false }),
      frame(Op.Ping, "one"),
      frame(Op.Continuation, "ll", { fin: false }),
      frame(Op.Ping, "two"),
      frame(Op.Pong, "unasked"),
      frame(Op.Continuation, "o"),
    );
    await expect.poll(() => pair.messages).toEqual(["hello"]);
    const pongs = pair.peer.frames.filter((f) => f.opcode === Op.Pong);
    expect(pongs.map((f) => f.payload.toString())).toEqual(["one", "two"]);
    expect(pongs.every((f) => f.masked && f.fin)).toBe(true);
  });

  it.each([0, 125])("answer a %i-byte ping with the same payload", async (size) => {
    const pair = await server.pair();
    const payload = Buffer.alloc(size, 0x61);
    pair.peer.write(frame(Op.Ping, payload));
    const pong = await pair.peer.frame(0);
    expect(pong?.opcode).toBe(Op.Pong);
    expect(pong?.payload.equals(payload)).toBe(true);
  });

  it.each([
    [126, 16],
    [65535, 16],
    [65536, 64],
    [200_000, 64],
  ] as const)("take a %i-byte frame with a %i-bit length", async (size, encoding) => {
    const pair = await server.pair();
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = i & 0xff;
    pair.peer.write(frame(Op.Binary, payload, { encoding }));
    await expect.poll(() => pair.messages.length).toBe(1);
    expect(Buffer.from(pair.messages[0] as Uint8Array).equals(payload)).toBe(true);
  });

  it("take frames written one byte at a time", async () => {
    const pair = await server.pair();
    const bytes = Buffer.concat([frame(Op.Text, "x".repeat(300), { fin: false }), frame(Op.Continuation, "y")]);
    for (const byte of bytes) {
      pair.peer.write(Buffer.from([byte]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await expect.poll(() => pair.messages).toEqual([`${"x".repeat(300)}y`]);
  });

  it("take a message that is exactly 4 MiB across fragments", async () => {
    const pair = await server.pair();
    const half = Buffer.alloc(2 * 1024 * 1024, 1);
    pair.peer.write(frame(Op.Binary, half, { fin: false }), frame(Op.Continuation, half));
    await expect.poll(() => pair.messages.length).toBe(1);
    expect((pair.messages[0] as Uint8Array).byteLength).toBe(4 * 1024 * 1024);
  });

  it("arrive with the handshake answer, through openWebSocket", async () => {
    const pair = await server.handshake(Buffer.concat([frame(Op.Text, "early"), frame(Op.Binary, Buffer.from([9]))]));
    await expect.poll(() => pair.messages.length).toBe(2);
    expect(pair.messages[0]).toBe("early");
    expect([...(pair.messages[1] as Uint8Array)]).toEqual([9]);
    pair.link.send("up");
    const sent = await pair.peer.frame(0);
    expect(sent).toMatchObject({ opcode: Op.Text, masked: true, fin: true });
    expect(sent?.payload.toString()).toBe("up");
  });
});

describe("frames the client sends", () => {
  // Sizes around each of the masking's paths (agent/src/net/mask.ts): the word loop below 512
  // bytes, whole and partial SIMD windows of 128 KiB, pooled and unpooled frame buffers, and
  // payloads given in several parts whose joins fall anywhere in a 32-bit word.
  const sizes = [0, 1, 3, 125, 126, 511, 512, 513, 16 * 1024 + 5, 65535, 65536, 128 * 1024, 128 * 1024 + 17];
  it.each([...sizes, 320 * 1024 + 3, 1024 * 1024 + 7])("carry a %i-byte message intact, masked", async (size) => {
    const pair = await server.pair();
    const bytes = Buffer.alloc(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 7919 + (i >> 8)) & 0xff;
    const cuts = [0, Math.floor(size / 3), Math.floor(size / 3) + 1, size];
    pair.link.send(cuts.slice(1).map((end, i) => bytes.subarray(cuts[i], end)));
    pair.link.send(bytes);
    const first = await pair.peer.frame(0);
    const second = await pair.peer.frame(1);
    for (const sent of [first, second]) {
      expect(sent).toMatchObject({ opcode: Op.Binary, masked: true, fin: true });
      expect(Buffer.compare(sent!.payload, bytes)).toBe(0);
    }
    pair.link.close(1000, "done");
  });
});

describe("the close handshake", () => {
  it("when the server starts it: the client echoes the code, then ends TCP", async () => {
    const pair = await server.pair();
    pair.peer.write(frame(Op.Close, closePayload(4001, "replaced")));
    expect(await pair.closed).toMatchObject({ code: 4001, reason: "replaced" });
    const answer = await pair.peer.frame(0);
    expect(answer?.opcode).toBe(Op.Close);
    // ws echoes the code alone.
    expect(answer?.payload.equals(closePayload(4001))).toBe(true);
    await pair.peer.ended;
  });

  it("when the server's close frame is empty: the answer is empty too, never 1005", async () => {
    const pair = await server.pair();
    pair.peer.write(frame(Op.Close));
    expect((await pair.closed).code).toBe(1005);
    const answer = await pair.peer.frame(0);
    expect(answer?.opcode).toBe(Op.Close);
    expect(answer?.payload.byteLength).toBe(0);
    await pair.peer.ended;
  });

  it("when the server starts it: whatever follows its close frame is ignored", async () => {
    const pair = await server.pair();
    pair.peer.write(frame(Op.Close, closePayload(1000)), frame(Op.Text, "late"), frame(Op.Ping, "late"));
    await pair.closed;
    await pair.peer.ended;
    expect(pair.messages).toEqual([]);
    expect(pair.peer.frames.map((f) => f.opcode)).toEqual([Op.Close]);
  });

  it("when the client starts it: TCP stays open until the server's close frame comes", async () => {
    const pair = await server.pair();
    pair.link.close(1000, "agent stopped");
    const sent = await pair.peer.frame(0);
    expect(sent?.opcode).toBe(Op.Close);
    expect(sent?.payload.equals(closePayload(1000, "agent stopped"))).toBe(true);
    // Messages already on their way are still delivered while closing; nothing is sent back.
    pair.peer.write(frame(Op.Text, "in flight"), frame(Op.Ping, "p"));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(pair.peer.endedAt).toBeUndefined();
    expect(pair.closeCalls()).toBe(0);
    expect(pair.messages).toEqual(["in flight"]);
    pair.link.send("after close");
    pair.peer.write(frame(Op.Close, closePayload(1000)));
    expect((await pair.closed).code).toBe(1000);
    await pair.peer.ended;
    expect(pair.peer.frames.map((f) => f.opcode)).toEqual([Op.Close]);
  });

  it("when the client starts it and the server never answers: the backstop timer destroys the socket", async () => {
    const pair = await server.pair();
    const start = performance.now();
    pair.link.close(4003, "heartbeat timeout");
    expect(await pair.peer.closeCode()).toBe(4003);
    const closed = await pair.closed;
    expect(closed.code).toBe(1006);
    expect(closed.at - start).toBeGreaterThanOrEqual(CLOSE_TIMEOUT_MS - 50);
    expect(closed.at - start).toBeLessThan(CLOSE_TIMEOUT_MS + 1000);
    await pair.peer.ended;
  });

  it("when the server drops TCP without a close frame: onclose reports 1006 once", async () => {
    const pair = await server.pair();
    pair.peer.socket.end();
    expect((await pair.closed).code).toBe(1006);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(pair.closeCalls()).toBe(1);
  });

  it("refuses to send a code that may not be sent, and cuts a long reason to 123 bytes", async () => {
    const pair = await server.pair();
    expect(() => pair.link.close(1005, "")).toThrow(RangeError);
    expect(() => pair.link.close(1006, "")).toThrow(RangeError);
    pair.link.close(1000, "é".repeat(100));
    const sent = await pair.peer.frame(0);
    // 60 two-byte characters and the mark of a cut: the 61st would not fit beside it, and is not split.
    expect(sent?.payload.byteLength).toBe(2 + 123);
    expect(sent?.payload.subarray(2).toString()).toBe(`${"é".repeat(60)}...`);
    pair.peer.write(frame(Op.Close, closePayload(1000)));
    await pair.closed;
  });

  it.each([1000, 1001, 1011, 1012, 1014, 3000, 4999])("echoes the valid code %i", async (code) => {
    const pair = await server.pair();
    pair.peer.write(frame(Op.Close, closePayload(code)));
    expect((await pair.closed).code).toBe(code);
    expect((await pair.peer.frame(0))?.payload.readUInt16BE(0)).toBe(code);
  });
});
