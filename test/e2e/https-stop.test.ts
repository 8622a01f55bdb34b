// A normal end of an HTTPS-transport session is not an error: the relay's log stays quiet.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Relay } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

describe("an agent on the HTTPS transport", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it("stops cleanly on Ctrl-C while its poll waits, and the relay logs no uncaught error", async () => {
    const agent = await AgentProcess.start("node", [
      ...["--relay", relay.url, "--port", String(origin.port), "--name", "quiet-stop"],
      ...["--transport", "https", "--inspect", "false"],
    ]);
    // A request answered means the agent's poll is back waiting for the next frames.
    expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
    // The relay has handled the goodbye: the tunnel is offline.
    expect((await visit(at(agent.url, "/echo"))).headers["x-burrow-error"]).toBe("agent-offline");
    // Stopped, workerd has printed all it will: what ended the session's waiting poll included.
    await relay.stop();
    expect(relay.output).not.toMatch(/Uncaught|the session ended/);
    expect(agent.output).not.toMatch(/reconnecting|error/);
  });
});
