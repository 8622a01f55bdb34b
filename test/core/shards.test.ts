// One tunnel on several cores (`agent --connections N`): shard k > 0 is admitted by shard 0 for
// the name's holder only, and visitors go to the shards whose agent is connected. The host's
// registry of cores by object name ("demo", "demo#1") is what the shards reach each other by.
import { CloseCode, FrameType } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { MemoryRelay } from "./_host.ts";

describe("shards", () => {
  it("admits a further connection only once the first is up, and only for the name's holder", async () => {
    const relay = new MemoryRelay();
    const early = await relay.say("demo", {}, undefined, 1);
    expect(early.answer).toMatchObject({ type: FrameType.Refused, code: "shard-waiting" });
    await relay.agent("demo");
    const stranger = await relay.say("demo", { claim: "another-claim-0123456789" }, undefined, 1);
    expect(stranger.answer).toMatchObject({ type: FrameType.Refused, code: "name-taken" });
    const shard = await relay.say("demo", {}, undefined, 1);
    expect(shard.answer).toMatchObject({ type: FrameType.Ready, name: "demo" });
    expect(relay.tunnels.has("demo#1")).toBe(true);
  });

  it("sends visitors to a shard whose agent is connected when shard 0's has stopped", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    const { link: second } = await relay.say("demo", {}, undefined, 1);
    await relay.settled(); // shard 1 has told shard 0 it is up
    first.link.cut(CloseCode.Normal, "stopped");
    const response = relay.visit("demo", "/to-shard-1");
    const head = await second.nextOf(FrameType.RequestHead);
    expect(head.path).toBe("/to-shard-1");
    await second.deliver({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
    expect((await response).status).toBe(204);
    expect(first.link.pending().filter((f) => f.type === FrameType.RequestHead)).toEqual([]);
  });
});
