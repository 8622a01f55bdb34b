import http from "node:http";
import type { AddressInfo } from "node:net";
import { INFO_PATH, PROTOCOL_VERSION } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";

/** `agent doctor --relay url` under Node, to its end. */
async function doctor(url: string): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess("node", ["doctor", "--relay", url]);
  return { status: await agent.exited, output: agent.output };
}

/** Something else at the relay's URL: a site answering `answer` for every request. */
async function impostor(answer: (response: http.ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_, response) => answer(response));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe("agent doctor against what answers at --relay", () => {
  let relay: Relay;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    relay = await Relay.start();
  }, 90_000);

  afterAll(async () => {
    await Promise.all(closers.map((close) => close()));
    await relay?.dispose();
  });

  it("says the relay is a Burrow relay of the agent's protocol, and exits 0", async () => {
    const { status, output } = await doctor(relay.url);
    expect(status, output).toBe(0);
    expect(output).toContain(`ok   relay      a Burrow relay speaking protocol ${PROTOCOL_VERSION}, as this agent does`);
    expect(output).toMatch(/^verdict: the agent will use the WebSocket transport$/m);
  });

  it("exits 5 saying it is not a Burrow relay when a web page answers, with a hint about --relay", async () => {
    const site = await impostor((response) => response.writeHead(200, { "content-type": "text/html" }).end("<h1>Welcome</h1>"));
    closers.push(site.close);
    const { status, output } = await doctor(site.url);
    expect(status, output).toBe(5);
    expect(output).toContain(`FAIL relay      not a Burrow relay: ${site.url}${INFO_PATH} answered 200 with text/html, not JSON`);
    expect(output).toMatch(/^ {16}hint: check --relay: /m);
    expect(output).toMatch(/^--\s+websocket\s+not tried/m);
  });

  it.each([
    [PROTOCOL_VERSION + 1, "upgrade the agent"],
    [PROTOCOL_VERSION - 1, "redeploy the relay"],
  ])("exits 5 on a relay speaking protocol %i, saying to %s", async (protocol, fix) => {
    const other = await impostor((response) =>
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ burrow: true, protocol })),
    );
    closers.push(other.close);
    const { status, output } = await doctor(other.url);
    expect(status, output).toBe(5);
    expect(output).toContain(`protocol mismatch: the relay speaks protocol ${protocol} and this agent ${PROTOCOL_VERSION}`);
    expect(output).toMatch(new RegExp(`hint: ${fix}`));
  });
});
