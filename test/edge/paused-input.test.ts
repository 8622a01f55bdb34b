import { connect, type Socket } from "node:net";
import { FrameType, type ReadyFrame, unackedLimit } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";

// While the agent is away (a cut, up to RESUME_SECONDS), or leaves half the session's frame
// bound unacknowledged (a cut the relay has not noticed looks the same), the relay reads no
// more of a visitor's body and forwards no more of a visitor WebSocket's messages: each chunk
// would become one frame kept for the agent, and a visitor trickling 1-byte chunks would pass
// the frame bound (unackedLimit) and end the tunnel's session, failing every stream. Input
// goes on when the agent is back, or acknowledges.

/** The frame bound of a relay of 2 streams a tunnel: 2 streams' windows and the headroom, 18,560 frames. */
const LIMIT = unackedLimit(2).frames;
/** Twice the frame bound of 1-byte pieces. */
const PIECES = 2 * LIMIT;

describe("a visitor trickling tiny pieces to an agent that is away or silent, on a relay of 2 streams a tunnel", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start({ launcher: "workerd", vars: { MAX_STREAMS_PER_TUNNEL: "2" } });
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("through a cut: the session is not ended, and two uploads arrive byte for byte once the agent is back", async () => {
    const [agent, ready] = (await RawAgent.say(relay, "trickle")) as [RawAgent, ReadyFrame];
    const uploads = [await Upload.start(relay, "trickle"), await Upload.start(relay, "trickle")];
    const heads = [await agent.nextOf(FrameType.RequestHead), await agent.nextOf(FrameType.RequestHead)];
    const cut = agent.closed;
    agent.socket.terminate();
    await cut;

    const sent = await trickle(uploads, PIECES / 2);
    // Time for the relay to read what it would of the trickle while the agent is away.
    await new Promise((resolve) => setTimeout(resolve, 1000));

    // It acknowledged nothing, so it asks for every frame again, from the RequestHeads on.
    const [back, again] = (await RawAgent.say(relay, "trickle", {
      resume: { session: ready.session, received: 0 },
    })) as [RawAgent, ReadyFrame];
    expect(again).toMatchObject({ type: FrameType.Ready, resumed: true });
    const streams = heads.map((head) => head.stream);
    const { bodies, frames } = await take(back, streams, 0);
    for (const stream of streams) answer(back, stream, frames);

    for (const stream of streams) expect(bodies.get(stream)?.equals(sent)).toBe(true);
    for (const upload of uploads) {
      expect(await upload.answer).toMatch(/^HTTP\/1\.1 200 .*\r\n\r\nok$/s);
      upload.socket.destroy();
    }
    back.socket.close(1000);
  });

  it("to a connected agent that does not acknowledge: it is not closed, and two uploads complete once it does", async () => {
    const agent = await RawAgent.hello(relay, "silent");
    const uploads = [await Upload.start(relay, "silent"), await Upload.start(relay, "silent")];
    const heads = [await agent.nextOf(FrameType.RequestHead), await agent.nextOf(FrameType.RequestHead)];

    const sent = await trickle(uploads, PIECES / 2);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(agent.socket.readyState).toBe(WebSocket.OPEN);

    const streams = heads.map((head) => head.stream);
    const { bodies, frames } = await take(agent, streams, 2);
    for (const stream of streams) answer(agent, stream, frames);
    for (const stream of streams) expect(bodies.get(stream)?.equals(sent)).toBe(true);
    for (const upload of uploads) {
      expect(await upload.answer).toMatch(/^HTTP\/1\.1 200 .*\r\n\r\nok$/s);
      upload.socket.destroy();
    }
    agent.socket.close(1000);
  });

  it("through a cut, a visitor WebSocket's 1-byte messages: the session is not ended, and each reaches the agent in order", async () => {
    const [agent, ready] = (await RawAgent.say(relay, "trickle-ws")) as [RawAgent, ReadyFrame];
    const visitor = new WebSocket(`ws://127.0.0.1:${relay.port}/ws`, { headers: { host: `trickle-ws.localhost:${relay.port}` } });
    const head = await agent.nextOf(FrameType.RequestHead);
    agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 101, headers: [] });
    await new Promise((resolve, reject) => visitor.once("open", resolve).once("error", reject));
    const cut = agent.closed;
    agent.socket.terminate();
    await cut;

    const sent = Buffer.alloc(PIECES);
    for (let i = 0; i < PIECES; i++) {
      sent[i] = i % 251;
      visitor.send(sent.subarray(i, i + 1));
      if (i % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));

    // It acknowledged nothing: every frame again, from the RequestHead on.
    const [back, again] = (await RawAgent.say(relay, "trickle-ws", {
      resume: { session: ready.session, received: 0 },
    })) as [RawAgent, ReadyFrame];
    expect(again).toMatchObject({ type: FrameType.Ready, resumed: true });
    expect(await back.next()).toMatchObject({ type: FrameType.RequestHead, stream: head.stream });
    const got: number[] = [];
    let frames = 1;
    while (got.length < PIECES) {
      const frame = await back.next();
      if (frame.type === FrameType.Ack) continue;
      frames++;
      if (frame.type === FrameType.End) continue; // the upgrade request's empty body
      expect(frame).toMatchObject({ type: FrameType.WsMessage, stream: head.stream, final: true });
      if (frame.type !== FrameType.WsMessage) break;
      got.push(...frame.bytes);
      back.send({ type: FrameType.Ack, received: frames });
      back.send({ type: FrameType.Credit, stream: head.stream, bytes: frame.bytes.byteLength });
    }
    expect(Buffer.from(got).equals(sent)).toBe(true);
    visitor.close();
    back.socket.close(1000);
  });
});

/** A visitor's chunked upload over its own TCP connection, one write (and segment) a chunk. */
class Upload {
  readonly answer: Promise<string>;

  private constructor(readonly socket: Socket) {
    this.answer = new Promise((resolve) => {
      let text = "";
      socket.on("data", (data: Buffer) => {
        text += data.toString("latin1");
        if (/\r\n\r\n.*ok$/s.test(text)) resolve(text);
      });
      socket.on("close", () => resolve(text));
      socket.on("error", () => resolve(text));
    });
  }

  static async start(relay: Relay, name: string): Promise<Upload> {
    const socket = connect(relay.port, "127.0.0.1");
    socket.setNoDelay(true);
    const upload = new Upload(socket);
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.write(`POST /upload HTTP/1.1\r\nHost: ${name}.localhost:${relay.port}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    return upload;
  }

  /** Sends one 1-byte chunk. */
  write(byte: number): void {
    this.socket.write(`1\r\n${String.fromCharCode(byte)}\r\n`, "latin1");
  }

  /** Ends the body. */
  end(): void {
    this.socket.write("0\r\n\r\n");
  }
}

/**
 * Sends `count` 1-byte chunks on each upload, taking turns (so that no two chunks of one
 * stream come in a row, which the relay would join into one frame), then the bodies' end;
 * returns each body. Node's sockets buffer what the relay does not read, so this never waits
 * for it.
 */
async function trickle(uploads: Upload[], count: number): Promise<Buffer> {
  const sent = Buffer.alloc(count);
  for (let i = 0; i < count; i++) {
    sent[i] = i % 251;
    for (const upload of uploads) upload.write(sent[i]!);
    if (i % 32 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  for (const upload of uploads) upload.end();
  return sent;
}

/**
 * Takes the bodies of `streams` up to their End, granting credit and acknowledging each frame
 * as an agent does (it had received `frames` of the session's frames before); returns the
 * bodies and the count of frames received.
 */
async function take(
  agent: RawAgent,
  streams: number[],
  frames: number,
): Promise<{ bodies: Map<number, Buffer>; frames: number }> {
  const parts = new Map(streams.map((stream) => [stream, [] as Uint8Array[]]));
  const bodies = new Map<number, Buffer>();
  while (bodies.size < streams.length) {
    const frame = await agent.next();
    if (frame.type === FrameType.Ack) continue;
    frames++;
    expect(frame.type).not.toBe(FrameType.Reset);
    if (frame.type === FrameType.End && parts.has(frame.stream))
      bodies.set(frame.stream, Buffer.concat(parts.get(frame.stream)!));
    if (frame.type === FrameType.Data && parts.has(frame.stream)) {
      parts.get(frame.stream)!.push(frame.bytes);
      agent.send({ type: FrameType.Ack, received: frames });
      agent.send({ type: FrameType.Credit, stream: frame.stream, bytes: frame.bytes.byteLength });
    }
  }
  return { bodies, frames };
}

/** The agent answers `stream` with a 200 and "ok", having acknowledged `frames`. */
function answer(agent: RawAgent, stream: number, frames: number): void {
  agent.send({ type: FrameType.Ack, received: frames });
  agent.send({ type: FrameType.ResponseHead, stream, status: 200, headers: [["content-length", "2"]] });
  agent.send({ type: FrameType.Data, stream, bytes: new TextEncoder().encode("ok") });
  agent.send({ type: FrameType.End, stream });
}
