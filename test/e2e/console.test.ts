import { execFileSync } from "node:child_process";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { freePort } from "../_process.ts";
import { Relay, ROOT } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

// The agent's console. Plain and JSON lines come from real agents with stdout a pipe, as in CI
// and under systemd; the live console from an agent in a pseudo-terminal: a detached tmux
// session of a known size, read back with capture-pane (-e keeps the colours).

let relay: Relay;
let origin: Origin;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  [relay, origin] = await Promise.all([Relay.start(), Origin.start()]);
}, 60_000);

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
});

afterAll(async () => {
  await relay?.dispose();
  await origin?.close();
});

function spawn(args: string[]): AgentProcess {
  const agent = new AgentProcess("node", args);
  agents.push(agent);
  return agent;
}

describe("agent console, not on a terminal", () => {
  it("prints one plain line per event and says what Ctrl-C did", async () => {
    const agent = spawn(tunnelArgs(origin.port, relay, "plain-lines"));
    const url = await agent.ready();
    expect((await visit(at(url, "/status/201"))).status).toBe(201);
    await agent.waitFor(/^GET \/status\/201 201 \d+ms$/);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
    expect(agent.lines).toContain("transport: websocket");
    expect(agent.lines.at(-1)).toBe("stopped: tunnel plain-lines closed, the name is free");
    expect(agent.output).not.toContain("nothing is listening");
    expect(agent.output).not.toContain("\x1b[");
  }, 30_000);

  it("prints one JSON object per line with --log json", async () => {
    const agent = spawn([...tunnelArgs(origin.port, relay, "json-lines"), "--log", "json"]);
    await agent.waitFor(/"event":"up"/);
    const up = JSON.parse(agent.lines.find((line) => line.includes('"event":"up"'))!);
    expect(up).toMatchObject({ level: "info", event: "up", name: "json-lines", origin: `http://localhost:${origin.port}` });
    expect(Number.isNaN(Date.parse(up.time))).toBe(false);
    expect((await visit(at(up.url, "/status/404"))).status).toBe(404);
    await agent.waitFor(/"event":"request"/);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
    const records = agent.lines.map((line) => JSON.parse(line));
    expect(records.map((record) => record.event)).toEqual(
      expect.arrayContaining(["start", "transport", "up", "request", "stopped"]),
    );
    expect(records.find((record) => record.event === "request")).toMatchObject({
      method: "GET",
      path: "/status/404",
      status: 404,
      durationMs: expect.any(Number),
      bytes: expect.any(Number),
    });
    expect(records.at(-1)).toMatchObject({ event: "stopped", message: "stopped: tunnel json-lines closed, the name is free" });
  }, 30_000);

  it("warns at once when nothing listens on the origin's port, and --quiet keeps only warnings and the URL", async () => {
    const port = await freePort();
    const agent = spawn([...tunnelArgs(port, relay, "quiet-one"), "--quiet"]);
    await agent.waitFor(/^warning: nothing is listening on localhost:\d+ yet/);
    expect(agent.lines).toContain(
      `warning: nothing is listening on localhost:${port} yet; visitors get 502 origin-unreachable until it does`,
    );
    // The tunnel opens all the same (--quiet keeps its URL line), and visitors get what they got
    // before. Waiting for the line: a visit before it may meet 502 agent-offline instead.
    await agent.waitFor(/^tunnel quiet-one is up: /);
    const response = await visit(`http://quiet-one.localhost:${relay.port}/`);
    expect([response.status, response.headers["x-burrow-error"]]).toEqual([502, "origin-unreachable"]);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
    for (const line of agent.lines) expect(line).toMatch(/^(warning: |tunnel quiet-one is up: )/);
  }, 30_000);

  it("says a repeated failure to connect once, then one short line per attempt", async () => {
    const agent = spawn(["--port", String(origin.port), "--relay", `http://127.0.0.1:${await freePort()}`]);
    await agent.waitFor(/^still cannot connect \(attempt 3\); retrying in \d/, { timeoutMs: 15_000 });
    expect(agent.output).toMatch(/^error: cannot reach the relay at 127\.0\.0\.1:\d+: /m);
    expect(agent.output).toMatch(/^ {2}hint: start one in this clone with `npm run relay`.*; retrying in \d/m);
    expect(agent.output.match(/cannot reach the relay/g)).toHaveLength(1);
    expect(agent.lines).toContainEqual(expect.stringMatching(/^still cannot connect \(attempt 2\); retrying in \d+(ms|\.\ds)$/));
  }, 30_000);

  it("takes -h and -v for --help and --version", async () => {
    const outputs = await Promise.all(
      [["-h"], ["--help"], ["-v"], ["--version"]].map(async (args) => {
        const agent = spawn(args);
        expect(await agent.exited).toBe(0);
        return agent.output;
      }),
    );
    expect(outputs[0]).toBe(outputs[1]);
    expect(outputs[0]).toContain("-h, --help");
    expect(outputs[2]).toBe(outputs[3]);
    expect(outputs[2]).toMatch(/^agent \d+\.\d+\.\d+ \(node /);
  }, 30_000);
});

const tmux = hasTmux();

function hasTmux(): boolean {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    const message = "tmux is missing: the live console tests are skipped (apt-get install tmux)";
    if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
    console.warn(`SKIPPED: ${message}`);
    return false;
  }
}

/** A detached tmux server of this test's own, running one agent in a 120x30 terminal. */
class Pane {
  private readonly socket = `burrow-console-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

  constructor(args: string[], env: Record<string, string> = {}) {
    const [command, argv] = agentCommand("node", args);
    const line = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), command, ...argv].map(quote).join(" ");
    // The shell stays after the agent exits, so that its last lines can be read.
    this.tmux(
      "-f",
      "/dev/null",
      "new-session",
      "-d",
      "-x",
      "120",
      "-y",
      "30",
      "-c",
      ROOT,
      `env -u BURROW_LOG ${line}; sleep 600`,
    );
  }

  tmux(...args: string[]): string {
    return execFileSync("tmux", ["-L", this.socket, ...args], { encoding: "utf8" });
  }

  /** The screen as text, one string per row; with `colours`, SGR escape codes kept. */
  screen(colours = false): string[] {
    return this.tmux("capture-pane", "-p", ...(colours ? ["-e"] : [])).split("\n");
  }

  async until(test: (rows: string[]) => boolean, timeoutMs = 20_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = this.screen();
      if (test(rows)) return rows;
      if (Date.now() > deadline) throw new Error(`the screen never matched:\n${rows.join("\n")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  close(): void {
    try {
      this.tmux("kill-server");
    } catch {
      // already gone
    }
  }
}

function quote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

describe.skipIf(!tmux)("agent console, on a terminal", () => {
  it("shows a live status block above the request log, redrawn after a resize, and says what Ctrl-C did", async () => {
    const pane = new Pane(tunnelArgs(origin.port, relay, "live-block"));
    try {
      // The block is drawn once the tunnel is up; the round trip fills in when the first
      // heartbeat, sent at that moment, is answered.
      const up = await pane.until((screen) => /^Burrow {2}up/.test(screen[0]!));
      expect(up[3]).toMatch(/^transport {2}websocket {3}round trip (-|<1ms|\d+ms)$/);
      const rows = await pane.until((screen) => /round trip (<1|\d+)ms$/.test(screen[3]!));
      expect(rows[1]).toBe(`relay      http://localhost:${relay.port}`);
      const url = /^tunnel +(\S+) -> /.exec(rows[2]!)![1]!;
      expect(rows[2]).toBe(`tunnel     ${url} -> http://localhost:${origin.port}`);
      expect(rows[3]).toMatch(/^transport {2}websocket {3}round trip (<1|\d+)ms$/);
      expect(rows[6]).toBe("─".repeat(120));

      expect((await visit(at(url, "/status/201"))).status).toBe(201);
      const after = await pane.until((screen) => /^requests {3}1 {3}in 0 B {3}out \d/.test(screen[4]!));
      expect(after.some((row) => /^\d\d:\d\d:\d\d {2}GET +\/status\/201 {2}201 {2}\d+ms {2}\d+ B$/.test(row))).toBe(true);
      // The inspector the agent started (4040, or the next free port).
      expect(after[5]).toMatch(/^inspector {2}http:\/\/127\.0\.0\.1:\d+$/);
      // Coloured: the status code in green.
      expect(pane.screen(true).join("\n")).toContain("\x1b[32m201");

      pane.tmux("resize-window", "-x", "60", "-y", "20");
      const resized = await pane.until((screen) => screen[6] === "─".repeat(60));
      expect(resized[0]).toMatch(/^Burrow {2}up/);
      expect(resized[2]).toBe(`tunnel     ${url} -> http://localhost:${origin.port}`.slice(0, 60));
      expect(resized.filter((row) => row.length > 60)).toEqual([]);
      expect(resized.filter((row) => row.startsWith("Burrow"))).toHaveLength(1);
      expect(resized.some((row) => /GET +\/status\/201 {2}201/.test(row))).toBe(true);

      pane.tmux("send-keys", "C-c");
      const stopped = await pane.until((screen) => screen.some((row) => row.includes("stopped: ")));
      // Rows of 60 wrap the line; the shell's newline after the agent's exit scrolls the block.
      expect(stopped.join("")).toContain("stopped: tunnel live-block closed, the name is free");
    } finally {
      pane.close();
    }
  }, 40_000);

  it("draws the same block without any escape code left on screen when NO_COLOR is set", async () => {
    const pane = new Pane(tunnelArgs(origin.port, relay, "no-colour"), { NO_COLOR: "1" });
    try {
      const rows = await pane.until((screen) => /^Burrow {2}up/.test(screen[0]!));
      const url = /^tunnel +(\S+) -> /.exec(rows[2]!)![1]!;
      expect((await visit(at(url, "/status/503"))).status).toBe(503);
      await pane.until((screen) => screen.some((row) => /GET +\/status\/503 {2}503/.test(row)));
      expect(pane.screen(true).join("\n")).not.toContain("\x1b[");
    } finally {
      pane.close();
    }
  }, 40_000);
});
