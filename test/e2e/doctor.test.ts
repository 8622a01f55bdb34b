import http from "node:http";
import type { AddressInfo } from "node:net";
import { INFO_PATH, PROTOCOL_VERSION } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";

/** `agent doctor --relay url` under Node, to its end. */
async function doctor(url: string, extra: string[] = []): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess("node", ["doctor", "--relay", url, ...extra]);
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
    expect(output).toContain("ok   token      none needed: the relay is open (anyone who can reach it may open tunnels)\n");
  });

  it("checks the local server given with --port: FAIL and exit 1 when nothing listens, ok when it answers", async () => {
    const closed = await impostor(() => {});
    await closed.close();
    const port = new URL(closed.url).port;
    const down = await doctor(relay.url, ["--port", port]);
    expect(down.status, down.output).toBe(1);
    expect(down.output).toContain(`FAIL origin     nothing is listening on http://localhost:${port}`);
    expect(down.output).toContain("hint: start your server first");
    const site = await impostor((response) => response.writeHead(204).end());
    closers.push(site.close);
    const up = await doctor(relay.url, ["--origin", site.url]);
    expect(up.status, up.output).toBe(0);
    expect(up.output).toContain(`ok   origin     ${site.url} answers GET / with 204 No Content`);
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

describe("agent doctor against a relay with tokens", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start({ vars: { BURROW_TOKENS: "alice:right-token-123" } });
  }, 90_000);

  afterAll(async () => {
    await relay?.dispose();
  });

  it("fails the token step with a hint and exits 3 for a wrong token, and for none", async () => {
    const wrong = await doctor(relay.url, ["--token", "wrong-token-456"]);
    expect(wrong.status, wrong.output).toBe(3);
    expect(wrong.output).toContain(
      "FAIL token      the relay refused the agent's hello (unauthorized): the token is not one this relay was given",
    );
    expect(wrong.output).toMatch(/^ {16}hint: pass the relay's token with --token-file FILE/m);
    expect(wrong.output).toContain("verdict: the relay refuses this agent; see the hint above");
    const none = await doctor(relay.url);
    expect(none.status, none.output).toBe(3);
    expect(none.output).toContain("(unauthorized): this relay requires a token");
  });

  it("passes the token step with the right token, without taking a name another agent uses", async () => {
    const { status, output } = await doctor(relay.url, ["--token", "right-token-123", "--name", "someones-app"]);
    expect(status, output).toBe(0);
    expect(output).toMatch(
      /^ok {3}token {6}the relay accepts the token \(a hello for the throwaway tunnel doctor-\S+ was answered Ready\)$/m,
    );
    expect(output).not.toContain("someones-app was answered");
  });
});
