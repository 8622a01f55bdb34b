import { mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { INFO_PATH, PROTOCOL_VERSION } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";

/** `agent doctor [connect NAME] ... --relay url` under Node, to its end. */
async function doctor(url: string, extra: string[] = []): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess("node", ["doctor", ...extra, "--relay", url]);
  return { status: await agent.exited, output: agent.output };
}

/** A TCP service for a --tcp tunnel: it counts the connections it accepted (and closes them). */
async function tcpService(): Promise<{ port: number; accepted(): number; close(): Promise<void> }> {
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted: () => accepted,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A file holding `key`, as the tunnel's owner hands it out. */
function keyFile(key: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "burrow-doctor-")), "devbox.key");
  writeFileSync(path, `${key}\n`);
  return path;
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

describe("agent doctor for a TCP tunnel and its visitors", () => {
  const KEY = "devbox-key-0123456789abcdef";
  let relay: Relay;
  let service: Awaited<ReturnType<typeof tcpService>>;
  let owner: AgentProcess;

  beforeAll(async () => {
    [relay, service] = await Promise.all([Relay.start(), tcpService()]);
    owner = await AgentProcess.start("node", [
      "--tcp",
      `127.0.0.1:${service.port}`,
      "--name",
      "devbox",
      "--connect-key-file",
      keyFile(KEY),
      "--relay",
      relay.url,
      "--inspect",
      "false",
    ]);
  }, 90_000);

  afterAll(async () => {
    await owner?.stop();
    await Promise.all([relay?.dispose(), service?.close()]);
  });

  it("doctor connect says the relay carries TCP tunnels and NAME takes the key, opens no connection, and exits 0", async () => {
    const lines = owner.lines.length;
    // The agent connected to its target once as it started, to warn if nothing listens.
    const accepted = service.accepted();
    const { status, output } = await doctor(relay.url, ["connect", "devbox", "--key-file", keyFile(KEY)]);
    expect(status, output).toBe(0);
    expect(output).toContain(
      `ok   relay      a Burrow relay speaking protocol ${PROTOCOL_VERSION}, as this agent does, with TCP tunnels`,
    );
    expect(output).toMatch(/^ok {3}https {6}session opened and polled/m);
    expect(output).toContain(
      "ok   key        tunnel devbox is a TCP tunnel, its agent is connected, and it takes this key (a Connect was answered Ready; no connection was opened)",
    );
    expect(output).not.toMatch(/^\S+ +token /m);
    expect(output).toMatch(/^verdict: agent connect devbox will use the WebSocket transport$/m);
    // Nothing reached the tunnel's agent or its service.
    expect(service.accepted()).toBe(accepted);
    const open = /^warning: this relay is open/;
    expect(owner.lines.slice(lines).filter((line) => !open.test(line))).toEqual([]);
  });

  it("doctor connect fails its key step with the relay's reason and a hint, and exits 3", async () => {
    const accepted = service.accepted();
    const wrong = await doctor(relay.url, ["connect", "devbox", "--key", "not-the-key-0123456789"]);
    expect(wrong.status, wrong.output).toBe(3);
    expect(wrong.output).toContain(
      "FAIL key        the relay refused the Connect (unauthorized): the key is not one of this tunnel's",
    );
    expect(wrong.output).toMatch(/^ {16}hint: ask the tunnel's owner for its connect key/m);
    expect(wrong.output).toContain("verdict: the relay refuses this visitor; see the hint above");
    const offline = await doctor(relay.url, ["connect", "nobody", "--key", KEY]);
    expect(offline.status, offline.output).toBe(3);
    expect(offline.output).toContain(
      'FAIL key        the relay refused the Connect (agent-offline): no agent serves tunnel "nobody"',
    );
    expect(offline.output).toMatch(/^ {16}hint: the tunnel's owner starts its agent \(agent --tcp PORT --name nobody\)/m);
    expect(service.accepted()).toBe(accepted);
  });

  it("doctor --tcp checks the relay takes a TCP tunnel and the target accepts connections (exit 1 when it does not)", async () => {
    const accepted = service.accepted();
    const up = await doctor(relay.url, ["--tcp", `127.0.0.1:${service.port}`]);
    expect(up.status, up.output).toBe(0);
    expect(up.output).toContain(`ok   target     127.0.0.1:${service.port} accepts connections`);
    expect(service.accepted()).toBe(accepted + 1);
    const closed = await tcpService();
    await closed.close();
    const down = await doctor(relay.url, ["--tcp", String(closed.port)]);
    expect(down.status, down.output).toBe(1);
    expect(down.output).toContain(`FAIL target     nothing accepts connections at localhost:${closed.port}`);
    expect(down.output).toContain("verdict: the relay is ready, but the target does not answer; see the hint above");
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

  it("doctor connect needs no relay token: a visitor's key is in its Connect, on either transport", async () => {
    const key = "devbox-key-0123456789abcdef";
    const service = await tcpService();
    const owner = await AgentProcess.start("node", [
      ...["--tcp", String(service.port), "--name", "tokened", "--connect-key-file", keyFile(key)],
      ...["--relay", relay.url, "--token", "right-token-123", "--inspect", "false"],
    ]);
    try {
      const { status, output } = await doctor(relay.url, ["connect", "tokened", "--key", key]);
      expect(status, output).toBe(0);
      expect(output).toMatch(/^ok {3}https {6}session opened and polled/m);
      expect(output).toMatch(/^ok {3}key {8}tunnel tokened is a TCP tunnel/m);
    } finally {
      await owner.stop();
      await service.close();
    }
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
