import { CloseCode, type Frame, FrameType, type HelloFrame, unackedLimit } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

// The agent's side of the bound on what a session keeps unacknowledged (unackedLimit): a relay
// that makes the agent answer and never acknowledges is left once past the bound, and the agent
// starts a new session. The scripted relay never sends an Ack.

let relay: ScriptedRelay;
let origin: Origin;
let agent: AgentProcess;

beforeAll(async () => {
  [relay, origin] = await Promise.all([ScriptedRelay.start(), Origin.start()]);
  agent = await AgentProcess.start("node", ["--port", String(origin.port), "--relay", relay.url, "--name", "patient"]);
});

afterAll(async () => {
  await agent?.stop();
  await relay?.close();
  await origin?.close();
});

const resets = (connection: RelayConnection) => connection.frames.filter((frame) => frame.type === FrameType.Reset).length;

describe("a relay that never acknowledges", () => {
  it("is left with 4006 once the agent keeps more frames for it than the bound, and the agent starts anew", async () => {
    const limit = unackedLimit().frames;
    const first = await relay.connection(0);
    let closed = false;
    void first.closed.then(() => {
      closed = true;
    });
    // CONNECT heads: each is answered with a Reset (the agent tunnels to its origin only).
    let stream = 0;
    let sent = 0;
    while (!closed && sent <= limit) {
      const heads = Array.from(
        { length: 5000 },
        (): Frame => ({ type: FrameType.RequestHead, stream: ++stream, method: "CONNECT", path: "/", headers: [] }),
      );
      first.send(...heads);
      sent += heads.length;
      await first.until(() => closed || resets(first) >= sent, 20_000, `${sent} resets`);
    }
    const { code, reason } = await first.closed;
    expect(code).toBe(CloseCode.Unacknowledged);
    expect(reason).toMatch(new RegExp(`^the relay left \\d+ frames unacknowledged, past the limit of ${limit}$`));
    expect(resets(first)).toBeLessThanOrEqual(limit);
    await agent.waitFor(new RegExp(`the relay left \\d+ frames unacknowledged, past the limit of ${limit}; ending the session`));
    // Back on a new session: nothing of the old one is kept to resume.
    const second = await relay.connection(1);
    expect(((await second.hello) as HelloFrame).resume).toBeNull();
  });
});
