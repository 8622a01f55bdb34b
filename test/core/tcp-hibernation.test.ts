// A Durable Object hibernates while its links are quiet (an idle ssh session) and wakes with
// nothing in memory: a TCP tunnel's streams must find their way again from the frames' ids and
// the links' attachments alone (edge/src/core/tcp.ts, tunnel-connect.ts).
import { type Frame, FrameType, hashConnectKey, PROTOCOL_VERSION } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { type MemoryLink, MemoryRelay, NO_RULES, tick } from "./_host.ts";

const KEY = "a-key-of-more-than-sixteen-characters";
const text = (s: string) => new TextEncoder().encode(s);
const read = (f: Frame) => (f.type === FrameType.Data ? new TextDecoder().decode(f.bytes) : `not Data: ${f.type}`);

/** Frames of the session received on `link` (what its Ack counts). */
const counted = (link: MemoryLink) =>
  link.frames().filter((f) => f.type !== FrameType.Ready && f.type !== FrameType.Refused && f.type !== FrameType.Ack).length;

describe("a TCP tunnel across the relay's hibernation", () => {
  it("carries an open connection's bytes both ways after a wake, on the same stream ids", async () => {
    const relay = new MemoryRelay();
    const agent = await relay.agent("devbox", {
      tcp: true,
      rules: { ...NO_RULES, connectKeys: [await hashConnectKey("devbox", KEY)] },
    });
    expect(agent.ready.tcp).toBe(true);
    const visitor = await relay.connect("devbox", undefined, "&role=connect");
    await visitor.deliver({
      type: FrameType.Connect,
      version: PROTOCOL_VERSION,
      client: "test",
      name: "devbox",
      key: KEY,
      resume: null,
    });
    expect(await visitor.next()).toMatchObject({ type: FrameType.Ready, tcp: true });
    await visitor.deliver({ type: FrameType.Open, stream: 5, from: "" });
    const open = await agent.link.nextOf(FrameType.Open);
    await agent.link.deliver({ type: FrameType.Data, stream: open.stream, bytes: text("banner") });
    const banner = await visitor.nextOf(FrameType.Data);
    expect([banner.stream, read(banner)]).toEqual([5, "banner"]);
    // Both ends acknowledge; quiet for PERSIST_MS, the sessions' counts go to the attachments.
    await agent.link.deliver({ type: FrameType.Ack, received: counted(agent.link) });
    await visitor.deliver({ type: FrameType.Ack, received: counted(visitor) });
    await tick(1300);

    relay.object("devbox").hibernate();

    await visitor.deliver({ type: FrameType.Data, stream: 5, bytes: text("typed") });
    const typed = await agent.link.nextOf(FrameType.Data);
    expect([typed.stream, read(typed)]).toEqual([open.stream, "typed"]);
    await agent.link.deliver({ type: FrameType.Data, stream: open.stream, bytes: text("echoed") });
    const echoed = await visitor.nextOf(FrameType.Data);
    expect([echoed.stream, read(echoed)]).toEqual([5, "echoed"]);
    // Nothing was reset on the way.
    expect([...agent.link.pending(), ...visitor.pending()].filter((f) => f.type === FrameType.Reset)).toEqual([]);
    // A second connection after the wake gets its own stream, in the same connector's block.
    await visitor.deliver({ type: FrameType.Open, stream: 6, from: "" });
    expect((await agent.link.nextOf(FrameType.Open)).stream).toBe(open.stream + 1);
  });
});
