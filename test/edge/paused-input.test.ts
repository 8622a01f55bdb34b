import { connect, type Socket } from "node:net";
import { type Frame, FrameType, type ReadyFrame, unackedLimit } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { counted } from "../_unacked.ts";

// While the agent is away (a cut, up to RESUME_SECONDS), the relay reads no more of a
// visitor's body: each chunk read would become one frame kept for the agent, and a visitor
// trickling 1-byte chunks would pass the session's frame bound (unackedLimit) and end the
// tunnel's session, failing every stream. Reading resumes when the agent is back.

describe("a visitor trickling an upload while the agent is away, on a relay of 2 streams a tunnel", () => {
  let relay: Relay;
  // 2 streams' windows and the headroom: 18,560 frames.
  const limit = unackedLimit(2);

  beforeAll(async () => {
    relay = await Relay.start({ launcher: "workerd", vars: { MAX_STREAMS_PER_TUNNEL: "2" } });
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("does not end the session, and the upload arrives byte for byte once the agent is back", async () => {
    const [agent, ready] = (await RawAgent.say(relay, "trickle")) as [RawAgent, ReadyFrame];
    expect(ready.type).toBe(FrameType.Ready);

    // The visitor starts a chunked upload; the agent sees its head, then its connection is cut.
    const visitor = connect(relay.port, "127.0.0.1");
    visitor.setNoDelay(true);
    const answer = response(visitor);
    await new Promise((resolve) => visitor.once("connect", resolve));
    visitor.write(`POST /upload HTTP/1.1\r\nHost: trickle.localhost:${relay.port}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const head = await agent.nextOf(FrameType.RequestHead);
    const cut = agent.closed;
    agent.socket.terminate();
    await cut;

    // Twice the frame bound of 1-byte chunks, each its own write (and TCP segment). Node's
    // socket buffers what the relay does not read, so the writes never wait.
    const chunks = 2 * limit.frames;
    const sent = new Uint8Array(chunks);
    for (let i = 0; i < chunks; i++) {
      sent[i] = i % 251;
      visitor.write(`1\r\n${String.fromCharCode(sent[i]!)}\r\n`, "latin1");
      if (i % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    visitor.write("0\r\n\r\n");
    // Let the relay read what it will of the trickle while the agent is away.
    await new Promise((resolve) => setTimeout(resolve, 1000));

    // The agent comes back and resumes; its session is still there.
    const [back, again] = (await RawAgent.say(relay, "trickle", {
      resume: { session: ready.session, received: counted(agent) },
    })) as [RawAgent, ReadyFrame];
    expect(again).toMatchObject({ type: FrameType.Ready, resumed: true });

    // It takes the body, granting credit and acknowledging as an agent does, until End.
    const parts: Uint8Array[] = [];
    let frames = counted(agent);
    for (;;) {
      const frame: Frame = await back.next();
      if (frame.type === FrameType.Ack) continue;
      frames++;
      if (frame.type === FrameType.Data && frame.stream === head.stream) {
        parts.push(frame.bytes);
        back.send({ type: FrameType.Ack, received: frames });
        back.send({ type: FrameType.Credit, stream: head.stream, bytes: frame.bytes.byteLength });
      }
      if (frame.type === FrameType.End && frame.stream === head.stream) break;
      expect(frame.type).not.toBe(FrameType.Reset);
    }
    const got = Buffer.concat(parts);
    back.send({ type: FrameType.Ack, received: frames });
    back.send({ type: FrameType.ResponseHead, stream: head.stream, status: 200, headers: [["content-length", "2"]] });
    back.send({ type: FrameType.Data, stream: head.stream, bytes: new TextEncoder().encode("ok") });
    back.send({ type: FrameType.End, stream: head.stream });

    expect(got.byteLength).toBe(chunks);
    expect(got.equals(Buffer.from(sent))).toBe(true);
    expect(await answer).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\nok$/);
    visitor.destroy();
    back.socket.close(1000);
  });
});

/** The visitor's whole response, as text, once the relay ends it or sends a complete `ok` body. */
function response(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (data: Buffer) => {
      text += data.toString("latin1");
      if (/\r\n\r\n[^]*ok$/.test(text) || /^HTTP\/1\.1 5/.test(text)) resolve(text);
    });
    socket.on("close", () => resolve(text));
    socket.on("error", () => resolve(text));
  });
}
