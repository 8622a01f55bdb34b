import { CloseCode, FrameType, type ReadyFrame, unackedLimit } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { counted, provoke, receivedAll } from "../_unacked.ts";
import { at, visit } from "../_visit.ts";

// Issue 19's rerun of the unacknowledged bound (test/edge/unacked.test.ts has the fix's own
// tests): acknowledgements that go backwards, past what was sent, and resumes with counts
// that do not fit, from raw agents against the relay on workerd.

describe("acknowledgements that do not fit, on a relay of 2 streams a tunnel", () => {
  let relay: Relay;
  let origin: Origin;
  let bystander: AgentProcess;
  const limit = unackedLimit(2);

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      Relay.start({ launcher: "workerd", vars: { MAX_STREAMS_PER_TUNNEL: "2" } }),
      Origin.start(),
    ]);
    bystander = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "bystander"));
  });

  afterAll(async () => {
    await bystander?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("still closes one whose acknowledgements go backwards, within the bound of what it last acknowledged", async () => {
    const agent = await RawAgent.hello(relay, "backwards");
    provoke(agent, 4000);
    expect(await receivedAll(agent, 4000)).toBe(true);
    // Acknowledges 4000, then 0 and 1000 again, as a replayed or hostile agent would.
    provoke(agent, 4000, 4000);
    provoke(agent, 4000, 0);
    provoke(agent, 4000, 1000);
    let sent = 16_000;
    while (sent <= 4000 + limit.frames + 4000 && (await receivedAll(agent, sent))) {
      provoke(agent, 4000, 0);
      sent += 4000;
    }
    const { code, reason } = await agent.closed;
    expect(code).toBe(CloseCode.Unacknowledged);
    expect(reason).toContain(`past the limit of ${limit.frames}`);
    // What it got past its one real acknowledgement stayed within the bound.
    expect(counted(agent) - 4000).toBeLessThanOrEqual(limit.frames);
    expect((await visit(at(bystander.url, "/echo"))).status).toBe(200);
  });

  it("closes one that acknowledges more than was sent, naming it, and serves the others on", async () => {
    const agent = await RawAgent.hello(relay, "overack");
    provoke(agent, 10);
    expect(await receivedAll(agent, 10)).toBe(true);
    provoke(agent, 0, 11);
    const { code, reason } = await agent.closed;
    expect(code).toBe(CloseCode.ProtocolError);
    expect(reason).toMatch(/11/);
    expect((await visit(at(bystander.url, "/echo"))).status).toBe(200);
    // The name is served again, by a new session.
    const again = await RawAgent.hello(relay, "overack");
    again.socket.close(1000);
  });

  it("starts a new session, resending nothing, for a resume whose count is stale, too large or another session's", async () => {
    const [first, ready] = (await RawAgent.say(relay, "resumer")) as [RawAgent, ReadyFrame];
    expect(ready.type).toBe(FrameType.Ready);
    provoke(first, 100);
    expect(await receivedAll(first, 100)).toBe(true);
    provoke(first, 0, 100);
    // Let the Ack arrive before the cut.
    await new Promise((resolve) => setTimeout(resolve, 200));
    first.socket.terminate();
    await first.closed;
    for (const resume of [
      { session: ready.session, received: 50 },
      { session: ready.session, received: 1e9 },
      { session: `${ready.session.slice(0, -1)}x`, received: 100 },
    ]) {
      const [next, answer] = await RawAgent.say(relay, "resumer", { resume });
      expect(answer, JSON.stringify(resume)).toMatchObject({ type: FrameType.Ready, resumed: false });
      // Nothing of the old session is sent again on the new one.
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(next.frames.filter((frame) => frame.type === FrameType.Reset)).toEqual([]);
      next.socket.terminate();
      await next.closed;
    }
  });

  it("does not let another claim resume a session it learnt the id of", async () => {
    const [owner, ready] = (await RawAgent.say(relay, "owned")) as [RawAgent, ReadyFrame];
    expect(ready.type).toBe(FrameType.Ready);
    const [, answer] = await RawAgent.say(relay, "owned", {
      claim: "claim-of-a-thief-0123456789",
      resume: { session: ready.session, received: 0 },
    });
    expect(answer).toMatchObject({ type: FrameType.Refused });
    expect(owner.socket.readyState).toBe(owner.socket.OPEN);
    owner.socket.close(1000);
  });
});
