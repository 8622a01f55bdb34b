// A TCP tunnel's sessions across what ends them on the relay's side: an agent whose session
// ends while visitors' streams are open.
import {
  CONNECTOR_ROLE,
  type ConnectFrame,
  FrameType,
  hashConnectKey,
  PROTOCOL_VERSION,
  type ReadyFrame,
} from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { type MemoryAgent, MemoryRelay, NO_RULES, quietWarnings } from "./_host.ts";

const KEY = "key-of-devbox-0123456789";
async function tcpAgent(relay: MemoryRelay, fields: { resume?: { session: string; received: number } } = {}) {
  const connectKeys = [await hashConnectKey("devbox", KEY)];
  return relay.agent("devbox", { tcp: true, rules: { ...NO_RULES, connectKeys }, ...fields });
}

/** A visitor's `agent connect` the relay answered Ready. */
async function connector(relay: MemoryRelay, resume: ConnectFrame["resume"] = null): Promise<MemoryAgent> {
  const link = await relay.connect("devbox", undefined, `&role=${CONNECTOR_ROLE}`);
  await link.deliver({
    type: FrameType.Connect,
    version: PROTOCOL_VERSION,
    client: "core-test",
    name: "devbox",
    key: KEY,
    resume,
  });
  const ready = await link.next();
  if (ready.type !== FrameType.Ready) throw new Error(`the core did not answer Ready: ${JSON.stringify(ready)}`);
  return { link, ready: ready as ReadyFrame };
}

/** A stream the visitor opened, joined to the agent's. */
async function joined(relay: MemoryRelay) {
  const agent = await tcpAgent(relay);
  const visitor = await connector(relay);
  await visitor.link.deliver({ type: FrameType.Open, stream: 1, from: "" });
  const open = await agent.link.nextOf(FrameType.Open);
  return { agent, visitor, agentStream: open.stream };
}

describe("a TCP tunnel whose agent's session ends", () => {
  it("resets each visitor's streams with the reason before closing its connect", async () => {
    quietWarnings();
    const relay = new MemoryRelay();
    const { agent, visitor } = await joined(relay);
    agent.link.cut(1000, "agent stopped");
    expect(await visitor.link.nextOf(FrameType.Reset)).toEqual({
      type: FrameType.Reset,
      stream: 1,
      code: "cancelled",
      message: 'The agent for tunnel "devbox" stopped.',
    });
    expect(visitor.link.closed?.code).toBe(1012);
  });
});
