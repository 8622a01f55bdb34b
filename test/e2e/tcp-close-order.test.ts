// A TCP stream through `connect --stdio` whose service closes first: the connection is over
// both ways the moment stdin's EOF comes, and --stdio stops in that same turn. Its End must
// still reach the relay before its close, or the relay resets the stream at the tunnel's agent
// (which logs every such connection as ended by the visitor instead of closed).
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand } from "../_agent.ts";
import { Relay } from "../_relay.ts";
import { keyFile, scratch } from "./_tcp.ts";

const KEY = "close-order-key-0123456789";

describe("a TCP stream whose service closes before the visitor's stdin ends", () => {
  let relay: Relay;
  let agent: AgentProcess;
  let server: net.Server;
  const dir = scratch();
  const keys = keyFile(dir, "keys", KEY);

  beforeAll(async () => {
    // Greets, ends its side at once, and reads on (half-open) until the visitor's EOF.
    server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.on("end", () => socket.destroy());
      socket.end("hello\n");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    relay = await Relay.start();
    agent = await AgentProcess.start("node", [
      ...["--tcp", `127.0.0.1:${port}`, "--connect-key-file", keys, "--relay", relay.url, "--name", "greeter"],
    ]);
  }, 90_000);

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await new Promise((resolve) => server?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it("closes at the tunnel's agent when stdin's EOF is what ends it, --stdio exiting at once", async () => {
    const [command, args] = agentCommand("node", ["connect", "greeter", "--stdio", "--relay", relay.url, "--key-file", keys]);
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      // The service's answer and EOF first: the stream is then open only towards the service.
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no EOF on stdout within 30 s: ${stdout}${stderr}`)), 30_000);
        child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
        child.stdout.on("end", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      expect(stdout).toBe("hello\n");
      const from = agent.lines.length;
      child.stdin.end();
      expect(await exited).toBe(0);
      expect(stderr).toBe("");
      const [line] = await agent.waitFor(/^tcp from \S+ -> 127\.0\.0\.1:\d+ .*$/, { from, timeoutMs: 20_000 });
      expect(line).toMatch(/ closed: /);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
