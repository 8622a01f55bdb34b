import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";

/** A local port with `serve` behind it, closed after the file. */
const servers: (http.Server | net.Server)[] = [];
async function listen(server: http.Server | net.Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
}

/** Runs the agent to its end. */
async function run(args: string[]): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess("node", args);
  return { status: await agent.exited, output: agent.output };
}

/** Far longer than a stop takes, far shorter than the 10 s each step of a dial may wait. */
const STOP_BOUND_MS = 5_000;

describe("a wrong --relay says what is wrong", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start();
  }, 90_000);

  afterAll(async () => {
    for (const server of servers) server.close();
    await relay?.dispose();
  });

  it("answers a relay without a scheme with the command that works, exit 2", async () => {
    expect(await run(["--port", "8000", "--relay", "localhost:8787"])).toEqual({
      status: 2,
      output:
        "error: --relay localhost:8787 has no scheme (http:// or https://)\n  hint: run: agent --port 8000 --relay http://localhost:8787",
    });
    const remote = await run(["--port", "8000", "--relay=tunnel.example.com"]);
    expect(remote.status).toBe(2);
    expect(remote.output).toContain("hint: run: agent --port 8000 --relay=https://tunnel.example.com");
  });

  it("stops at once, exit 5, when a web page answers at --relay, without the page or retries", async () => {
    const site = await listen(
      http.createServer((_, response) => response.writeHead(200, { "content-type": "text/html" }).end("<h1>Welcome home</h1>")),
    );
    const { status, output } = await run(["--port", "8000", "--relay", `http://127.0.0.1:${site}`]);
    expect(status, output).toBe(5);
    expect(output).toContain(
      `error: not a Burrow relay: http://127.0.0.1:${site}/_burrow/info answered 200 with text/html, not JSON`,
    );
    expect(output).toContain("hint: check --relay: ");
    expect(output).not.toContain("Welcome home");
    expect(output).not.toMatch(/retrying|reconnecting/);
  });

  it("says that a relay given as https:// speaks plain HTTP, exit 5, and names the http:// URL", async () => {
    const { status, output } = await run(["--port", "8000", "--relay", `https://localhost:${relay.port}`]);
    expect(status, output).toBe(5);
    expect(output).toContain(
      `error: localhost:${relay.port} speaks plain HTTP, not TLS: a Burrow relay answers at http://localhost:${relay.port}`,
    );
    expect(output).toContain(`hint: use --relay http://localhost:${relay.port}`);
    expect(output).not.toContain("firewall");
  });

  it("tells a user of a clone whose relay is not running to start one with `npm run relay`, not `npm run dev`", async () => {
    const port = await listen(net.createServer());
    await new Promise<void>((resolve) => servers.pop()!.close(() => resolve()));
    const agent = new AgentProcess("node", ["--port", "8000", "--relay", `http://localhost:${port}`]);
    await agent.waitFor(/hint: /);
    await agent.stop("SIGINT");
    expect(agent.output).toContain("connection refused");
    expect(agent.output).toContain("hint: start one in this clone with `npm run relay`");
    expect(agent.output).not.toContain("npm run dev");
  });

  it.each([
    ["a relay that accepts and never answers the upgrade", (port: number) => ["--relay", `http://127.0.0.1:${port}`]],
    ["a relay that never answers the TLS handshake", (port: number) => ["--relay", `https://127.0.0.1:${port}`]],
    [
      "a proxy that never answers CONNECT",
      (port: number) => ["--relay", "https://tunnel.example.com", "--proxy", `http://127.0.0.1:${port}`],
    ],
  ])("stops on Ctrl-C mid-handshake with %s", async (_what, flags) => {
    let connected: () => void = () => {};
    const reached = new Promise<void>((resolve) => {
      connected = resolve;
    });
    const silent = await listen(net.createServer(() => connected()));
    const agent = new AgentProcess("node", ["--port", "8000", "--inspect", "false", ...flags(silent)]);
    await reached;
    agent.signalGroup("SIGINT");
    const bound = new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), STOP_BOUND_MS));
    expect(await Promise.race([agent.exited, bound]), agent.output).toBe(0);
    expect(agent.output).toContain("stopped: the tunnel was never up");
  });
});
