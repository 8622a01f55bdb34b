// Errors about settings, as a user sees them: each names where the bad value came from (the
// file, line and key, or the variable), and a typo gets the nearest flag, key or command.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand } from "../_agent.ts";

const agents: AgentProcess[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "burrow-config-errors-"));
}

/** An agent run in `cwd` (where it looks for burrow.toml), with a config directory of its own. */
function agentInDir(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const agent = new AgentProcess(
    {
      name: "node",
      command: (argv) => agentCommand("node", argv),
      cwd,
    },
    ["--inspect", "false", ...args],
    {
      XDG_CONFIG_HOME: tempDir(),
      ...env,
    },
  );
  agents.push(agent);
  return agent;
}

describe("errors about settings", () => {
  it.each([
    ['relay = "http://localhost:9"\nport = "eight"\n', {}, /^error: burrow\.toml line 2, key port: eight is not a port number$/m],
    ["port = 80\nheartbeat = 0\n", {}, /^error: burrow\.toml line 2, key heartbeat: 0 is out of range$/m],
    ["port = 80\ninspect-keep = 0\n", {}, /^error: burrow\.toml line 2, key inspect-keep: 0 is out of range$/m],
    ['port = 80\nca = "burrow.toml"\n', {}, /^error: burrow\.toml line 2, key ca: \S+burrow\.toml holds no PEM certificate/m],
    ['dir = "nope"\n', {}, /^error: burrow\.toml line 1, key dir: \S+nope cannot be served: /m],
    [
      '[[tunnel]]\nport = 80\n[[tunnel]]\n\nport = 81\nallow-ip = ["10.0.0.0/33"]\n',
      {},
      /^error: burrow\.toml line 6, key allow-ip: "10\.0\.0\.0\/33" is not an address range/m,
    ],
    ['port = 80\nname = "Bad_Name"\n', {}, /^error: burrow\.toml line 2, key name: "Bad_Name" is not a tunnel name$/m],
    ["", { BURROW_PORT: "eight" }, /^error: BURROW_PORT: eight is not a port number$/m],
    ["port = 80\n", { BURROW_RELAY: "ftp://relay" }, /^error: BURROW_RELAY: must be an http:\/\/ or https:\/\/ URL, not ftp:$/m],
  ])("names the file, line and key (or the variable) of a bad value: %j %j", async (text, env, message) => {
    const dir = tempDir();
    if (text) writeFileSync(join(dir, "burrow.toml"), text);
    const agent = agentInDir(dir, [], env);
    expect(await agent.exited).toBe(2);
    expect(agent.output).toMatch(message);
  });

  it("answers an unknown key or flag with the nearest one", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "burrow.toml"), "port = 80\nheartbaet = 5\n");
    const key = agentInDir(dir, []);
    expect(await key.exited).toBe(2);
    expect(key.output).toMatch(/^error: burrow\.toml line 2, key heartbaet: is not a setting; did you mean heartbeat\?$/m);
    const flag = agentInDir(tempDir(), ["--port", "80", "--tokenfile", "x"]);
    expect(await flag.exited).toBe(2);
    expect(flag.output).toMatch(/^error: unknown argument "--tokenfile"; did you mean --token-file\?$/m);
  });

  it("says which names are reserved and suggests one that is free", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "burrow.toml"), '[[tunnel]]\nname = "web"\nport = 80\n[[tunnel]]\nname = "docs"\nport = 81\n');
    const agent = agentInDir(dir, []);
    expect(await agent.exited).toBe(2);
    expect(agent.output).toMatch(/^error: burrow\.toml line 5, key name: docs is reserved: relays keep .*\bapi, .*\bdocs, /m);
    expect(agent.output).toContain(
      'hint: choose another name, such as my-docs (--name my-docs, or name = "my-docs" in burrow.toml)',
    );
  });

  it.each([
    [["http"], "error: `agent http` needs the local server", "hint: for example: agent http 8000, or agent --port 8000"],
    [
      ["udp", "53"],
      "error: Burrow tunnels HTTP (and WebSockets) and TCP, not udp",
      "hint: for an HTTP server: agent --port 8000; for TCP: agent --tcp 22",
    ],
    [["http", "eight"], 'error: `agent http eight`: "eight" is neither a port nor a URL', "hint: for example: agent --port 8000"],
    [["logn"], 'error: unknown command "logn"; did you mean login?', "hint: to expose a local server: agent --port 8000"],
  ])("answers %j with the command to type", async (argv, message, hint) => {
    const agent = agentInDir(tempDir(), argv);
    expect(await agent.exited).toBe(2);
    expect(agent.output).toContain(message);
    expect(agent.output).toContain(hint);
  });
});
