import {
  CloseCode,
  CREDIT_BATCH,
  encodeFrame,
  type Frame,
  FrameType,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  MAX_HEADER_BYTES,
  MAX_HEADERS,
  type RequestHeadFrame,
  type ResetFrame,
  type WsMessageFrame,
} from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { WebSocket } from "ws";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

let relay: ScriptedRelay;
let origin: Origin;
let agent: AgentProcess;
let stream = 100;

beforeAll(async () => {
  [relay, origin] = await Promise.all([ScriptedRelay.start(), Origin.start()]);
  agent = await AgentProcess.start("node", ["--port", String(origin.port), "--relay", relay.url, "--name", "hardened"]);
});

afterAll(async () => {
  await agent?.stop();
  await relay?.close();
  await origin?.close();
});

/** The connection the agent is on now. */
function current(): RelayConnection {
  return relay.connections.at(-1)!;
}

function head(path: string, headers: [string, string][] = []): RequestHeadFrame {
  return { type: FrameType.RequestHead, stream: ++stream, method: "GET", path, headers };
}

const upgrade: [string, string][] = [
  ["upgrade", "websocket"],
  ["connection", "Upgrade"],
];

/** Waits for the frame of `type` on stream `id`. */
function answer<T extends Frame>(id: number, type: T["type"]): Promise<T> {
  return current().next((frame): frame is T => frame.type === type && "stream" in frame && frame.stream === id);
}

/** Resolves once stream `id` got a ResponseHead or a Reset. */
function answered(id: number): Promise<Frame> {
  return current().next(
    (frame) =>
      (frame.type === FrameType.ResponseHead || frame.type === FrameType.Reset) && "stream" in frame && frame.stream === id,
  );
}

/** Sends a good request and checks that the agent still serves it to the end. */
async function stillServes(): Promise<void> {
  const good = head("/echo");
  current().send(good, { type: FrameType.End, stream: good.stream });
  expect(await answer(good.stream, FrameType.ResponseHead)).toMatchObject({ status: 200 });
  await answer(good.stream, FrameType.End);
}

/** Opens a visitor WebSocket to the origin's /ws/echo through the agent; returns the origin's side. */
async function openSocket(): Promise<{ id: number; originSide: WebSocket }> {
  const before = origin.sockets.length;
  const frame = head("/ws/echo", upgrade);
  current().send(frame);
  expect(await answer(frame.stream, FrameType.ResponseHead)).toMatchObject({ status: 101 });
  await current().until(() => origin.sockets.length > before);
  return { id: frame.stream, originSide: origin.sockets[before]! };
}

describe("agent frame handling", () => {
  it("resets only the stream whose frame breaks a limit, and keeps serving the others", async () => {
    const good = head("/echo");
    const bad = ++stream;
    const worse = ++stream;
    const tooLong = encode([FrameType.RequestHead, bad, "GET", "/", [["x-big", "a".repeat(MAX_HEADER_BYTES)]]]);
    const tooMany = encode([
      FrameType.RequestHead,
      worse,
      "GET",
      "/",
      Array.from({ length: MAX_HEADERS + 1 }, (_, i) => [`x-${i}`, "1"]),
    ]);
    current().sendBytes(
      Buffer.concat([encodeFrame(good), tooLong, tooMany, encodeFrame({ type: FrameType.End, stream: good.stream })]),
    );
    for (const id of [bad, worse]) {
      expect(await answer<ResetFrame>(id, FrameType.Reset)).toMatchObject({ code: "protocol-error" });
    }
    expect(await answer(good.stream, FrameType.ResponseHead)).toMatchObject({ status: 200 });
    await answer(good.stream, FrameType.End);
    expect(agent.output).toMatch(
      new RegExp(`warning: stream ${bad}: the relay sent a frame that breaks the protocol .*; reset that stream`),
    );
    expect(relay.connections).toHaveLength(1);
  });

  it.each([
    [1004, 1011],
    [1015, 1011],
    [2000, 1011],
    [1001, 1001],
    [3001, 3001],
  ])("passes a visitor's close code %i on to the origin as %i, without failing", async (code, expected) => {
    const { id, originSide } = await openSocket();
    const closed = new Promise<number>((resolve) => originSide.once("close", (c: number) => resolve(c)));
    current().send({ type: FrameType.WsClose, stream: id, code, reason: "bye" });
    expect(await closed).toBe(expected);
    await stillServes();
  });

  it("cuts a close reason to the 123 bytes a close frame holds, at a character boundary", async () => {
    const { id, originSide } = await openSocket();
    const closed = new Promise<string>((resolve) =>
      originSide.once("close", (_c: number, reason: Buffer) => resolve(reason.toString())),
    );
    current().send({ type: FrameType.WsClose, stream: id, code: 1000, reason: "é".repeat(100) });
    // 60 two-byte characters and the mark of a cut (closeReason): 123 bytes.
    expect(await closed).toBe(`${"é".repeat(60)}...`);
    await stillServes();
  });

  it.each([
    ["a WebSocket path with a fragment", "/ws/echo#x", upgrade],
    ["an invalid subprotocol list", "/ws/echo", [...upgrade, ["sec-websocket-protocol", "chat v2, chat v2"]]],
    ["a request path node:http refuses", "/caf\u0100", []],
  ] as [string, string, [string, string][]][])("answers %s with a Reset, and keeps serving", async (_what, path, headers) => {
    const frame = head(path, headers);
    current().send(frame);
    expect(await answered(frame.stream)).toMatchObject({ type: FrameType.Reset, code: "protocol-error" });
    await stillServes();
  });

  it.each([
    ["Transfer-Encoding: chunked", ["transfer-encoding", "chunked"]],
    ["Content-Length", ["content-length", "5"]],
    ["TE", ["te", "trailers"]],
  ] as [string, [string, string]][])(
    "opens a WebSocket whose handshake came with %s and Expect without passing them on: messages still get through",
    async (_what, field) => {
      const frame = head("/ws/headers", [...upgrade, field, ["expect", "100-continue"]]);
      current().send(frame);
      expect(await answer(frame.stream, FrameType.ResponseHead)).toMatchObject({ status: 101 });
      // The origin's first message is the handshake's fields as it got them.
      const said = await answer<WsMessageFrame>(frame.stream, FrameType.WsMessage);
      const fields = JSON.parse(new TextDecoder().decode(said.bytes)) as Record<string, string>;
      expect(Object.keys(fields)).not.toContain(field[0]);
      expect(Object.keys(fields)).not.toContain("expect");
      const hello = new TextEncoder().encode("hello through the handshake");
      current().send({ type: FrameType.WsMessage, stream: frame.stream, binary: false, final: true, bytes: hello });
      await current().next(
        (f) => f.type === FrameType.WsMessage && f.stream === frame.stream && Buffer.from(f.bytes).equals(hello),
      );
      await stillServes();
    },
  );

  it("resets a WebSocket stream whose messages come before the origin accepted it", async () => {
    const frame = head("/ws/echo", upgrade);
    current().send(frame, {
      type: FrameType.WsMessage,
      stream: frame.stream,
      binary: false,
      final: true,
      bytes: new Uint8Array([104]),
    });
    const first = await answered(frame.stream);
    expect(first.type === FrameType.Reset || (first.type === FrameType.ResponseHead && first.status === 101)).toBe(true);
    await stillServes();
  });

  it("resets a request whose body the relay sends past its credit, and keeps serving", async () => {
    const post = { ...head("/echo"), method: "POST" };
    const data = (bytes: number) => ({ type: FrameType.Data, stream: post.stream, bytes: new Uint8Array(bytes) });
    const credited = () =>
      current()
        .frames.filter((f) => f.type === FrameType.Credit && f.stream === post.stream)
        .reduce((sum, f) => sum + (f.type === FrameType.Credit ? f.bytes : 0), 0);
    // 960 KiB: the origin reads them all, and the agent credits three batches, 768 KiB.
    current().send(post, ...Array.from({ length: 15 }, () => data(MAX_DATA_CHUNK)));
    await current().until(() => credited() === 3 * CREDIT_BATCH);
    // Allowed now: the window, less 960 KiB, plus 768 KiB. One message (handled at once) of one byte more.
    const allowed = INITIAL_WINDOW - 15 * MAX_DATA_CHUNK + 3 * CREDIT_BATCH;
    current().send(...Array.from({ length: allowed / MAX_DATA_CHUNK }, () => data(MAX_DATA_CHUNK)), data(1));
    expect(await answer<ResetFrame>(post.stream, FrameType.Reset)).toMatchObject({
      code: "protocol-error",
      message: expect.stringContaining("more request body than its credit allows (1 bytes arrived with credit for 0)"),
    });
    await stillServes();
  });

  it.each(["request", "WebSocket"])("resets a %s stream whose Credit gives more than the window", async (kind) => {
    let id: number;
    if (kind === "request") {
      // A body that never ends keeps the request open.
      const post = { ...head("/echo"), method: "POST" };
      current().send(post);
      id = post.stream;
    } else {
      id = (await openSocket()).id;
    }
    current().send({ type: FrameType.Credit, stream: id, bytes: 1 });
    expect(await answer<ResetFrame>(id, FrameType.Reset)).toMatchObject({
      code: "protocol-error",
      message: expect.stringContaining(`would exceed the ${INITIAL_WINDOW}-byte window`),
    });
    await stillServes();
  });

  it("sends the origin's messages up to its credit and not a byte past, cutting a piece where the credit ends", async () => {
    const { id, originSide } = await openSocket();
    const pieces = () => current().frames.filter((f): f is WsMessageFrame => f.type === FrameType.WsMessage && f.stream === id);
    const sent = () => pieces().reduce((sum, piece) => sum + piece.bytes.byteLength, 0);
    // 1,000 bytes, then a window's worth: its last 64 KiB piece would end 1,000 bytes past the credit.
    originSide.send(new Uint8Array(1000));
    originSide.send(new Uint8Array(INITIAL_WINDOW));
    await current().until(() => sent() >= INITIAL_WINDOW);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(sent()).toBe(INITIAL_WINDOW);
    expect(pieces().at(-1)).toMatchObject({ final: false });
    current().send({ type: FrameType.Credit, stream: id, bytes: 1000 });
    await current().until(() => sent() === INITIAL_WINDOW + 1000);
    expect(pieces().at(-1)).toMatchObject({ final: true, bytes: new Uint8Array(1000) });
    await stillServes();
  });

  it("ignores Data, End, Credit and Reset for streams it does not know", async () => {
    current().send(
      { type: FrameType.Data, stream: 999_999, bytes: new Uint8Array(10) },
      { type: FrameType.End, stream: 999_999 },
      { type: FrameType.Credit, stream: 999_998, bytes: 1000 },
      { type: FrameType.Reset, stream: 999_997, code: "cancelled", message: "gone" },
    );
    await stillServes();
    expect(relay.connections).toHaveLength(1);
  });

  it("closes the connection with 4002 for bytes that are not msgpack, and reconnects", async () => {
    const before = relay.connections.length;
    const connection = current();
    connection.sendBytes(new Uint8Array([0xc1, 0x00, 0x01]));
    expect((await connection.closed).code).toBe(CloseCode.ProtocolError);
    await relay.connection(before);
    await agent.ready(agent.lines.findLastIndex((line) => line.includes("malformed frame")) + 1);
    await stillServes();
    expect(agent.exitCode).toBeNull();
  });
});
