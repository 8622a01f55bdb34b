// Who may use a TCP tunnel, as the visitor's `agent connect` and the service behind it see it:
// keys, --allow-ip, the wrong kind of tunnel or none; and several tunnels, TCP and HTTP, from
// one agent and one burrow.toml. A real sshd (it logs every connection it accepts) and a real
// origin behind real agents on Node.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { freePort } from "../_process.ts";
import { Relay } from "../_relay.ts";
import { type Sshd, skipServices, sshRun, startSshd } from "../_services.ts";
import { at, visit } from "../_visit.ts";
import { keyFile, proxyCommand, scratch, TunnelSsh } from "./_tcp.ts";

const KEY = "the-right-key-0123456789";
const skip = skipServices("the TCP tunnel's access tests");

describe.skipIf(skip)("who may connect to a TCP tunnel", () => {
  let relay: Relay;
  let sshd: Sshd;
  let origin: Origin;
  let guarded: AgentProcess;
  let lanOnly: AgentProcess;
  const dir = scratch();
  const keys = keyFile(dir, "keys", KEY);
  const wrong = keyFile(dir, "wrong", "not-the-key-0123456789");

  beforeAll(async () => {
    [relay, sshd, origin] = await Promise.all([Relay.start(), startSshd(), Origin.start()]);
    const serve = (name: string, extra: string[] = []) =>
      AgentProcess.start("node", [
        ...["--tcp", String(sshd.port), "--connect-key-file", keys, "--relay", relay.url, "--name", name, ...extra],
      ]);
    [guarded, lanOnly] = await Promise.all([serve("guarded"), serve("lan-only", ["--allow-ip", "10.0.0.0/8"])]);
  }, 90_000);

  afterAll(async () => {
    await Promise.all([guarded, lanOnly].map((agent) => agent?.stop("SIGINT")));
    await relay?.dispose();
    await Promise.all([sshd?.stop(), origin?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  /** `agent connect NAME --stdio ...args` to its end, from a shell with no BURROW_CONNECT_KEY. */
  async function connect(name: string, args: string[]): Promise<{ code: number | null; output: string }> {
    const process = new AgentProcess("node", ["connect", name, "--stdio", "--relay", relay.url, ...args]);
    return { code: await process.exited, output: process.output };
  }

  /**
   * Runs `attempt` (refused), then one ssh with the right key: the service and the agent see
   * that one connection and nothing before it. The agent's frames come in order on its one
   * session, so a connection the relay had let through first would show first.
   */
  async function reachesNothing(attempt: () => Promise<void>): Promise<void> {
    const seen = sshd.connections();
    const from = guarded.lines.length;
    await attempt();
    const good = new TunnelSsh(sshd, "guarded", proxyCommand("node", relay, { file: keys }));
    expect(await good.ssh("echo in")).toMatchObject({ code: 0, stdout: "in\n" });
    const line = await guarded.waitFor(/^tcp /, { from });
    expect(line.input).toMatch(/^tcp from \S+ -> localhost:\d+ closed:/);
    expect(guarded.lines.slice(from).filter((l) => l.startsWith("tcp "))).toHaveLength(1);
    expect(sshd.connections()).toBe(seen + 1);
  }

  it("refuses a wrong key with a message naming the key, and nothing reaches the service", async () => {
    await reachesNothing(async () => {
      const refused = await connect("guarded", ["--key-file", wrong]);
      expect(refused.code).toBe(3);
      expect(refused.output).toContain("error: the relay refused the tunnel: the key is not one of this tunnel's");
      expect(refused.output).toContain(
        "hint: ask the tunnel's owner for its connect key; pass it with --key-file FILE or BURROW_CONNECT_KEY",
      );
      // Through ssh, its ProxyCommand's words are ssh's stderr; ssh exits 255.
      const ssh = new TunnelSsh(sshd, "guarded", proxyCommand("node", relay, { file: wrong }));
      const result = await ssh.ssh("echo never");
      expect(result).toMatchObject({ code: 255, stdout: "" });
      expect(result.stderr).toContain("the key is not one of this tunnel's");
    });
  });

  it("refuses to start without a key, saying where to give it, and nothing reaches the service", async () => {
    await reachesNothing(async () => {
      const refused = await connect("guarded", []);
      expect(refused.code).toBe(2);
      expect(refused.output).toContain("error: agent connect guarded needs the tunnel's key");
      expect(refused.output).toContain("--key-file FILE or BURROW_CONNECT_KEY");
      const ssh = new TunnelSsh(sshd, "guarded", proxyCommand("node", relay));
      const result = await ssh.ssh("echo never");
      expect(result).toMatchObject({ code: 255, stdout: "" });
      expect(result.stderr).toContain("needs the tunnel's key");
    });
  });

  it("refuses a visitor outside --allow-ip with forbidden, even with the right key", async () => {
    await reachesNothing(async () => {
      const refused = await connect("lan-only", ["--key-file", keys]);
      expect(refused.code).toBe(3);
      expect(refused.output).toContain(
        "error: the relay refused the tunnel: this tunnel does not admit visitors from your address (its --allow-ip)",
      );
      expect(refused.output).toContain("hint: the tunnel's owner admits listed addresses only (--allow-ip)");
    });
    expect(lanOnly.lines.filter((line) => line.startsWith("tcp "))).toEqual([]);
  });

  it("answers a browser at the TCP tunnel's URL with 421 tcp-tunnel, pointing to agent connect", async () => {
    const response = await visit(at(guarded.url, "/"));
    expect(response.status).toBe(421);
    expect(response.headers["x-burrow-error"]).toBe("tcp-tunnel");
    expect(response.body.toString()).toContain("agent connect guarded --listen 127.0.0.1:PORT");
  });

  it("refuses a name no agent serves with agent-offline, saying to start the agent", async () => {
    const refused = await connect("nobody-here", ["--key-file", keys]);
    expect(refused.code).toBe(3);
    expect(refused.output).toContain(
      'error: the relay refused the tunnel: no agent serves tunnel "nobody-here" on this relay now',
    );
    expect(refused.output).toContain("hint: start the tunnel's agent (`agent --tcp PORT --name NAME`)");
  });

  it("serves visitors with the key the agent made and printed, through connect --listen", async () => {
    // No --connect-key-file: the agent makes a key, keeps it, and prints the command to hand out.
    const home = mkdtempSync(join(tmpdir(), "burrow-config-"));
    const made = await AgentProcess.start("node", ["--tcp", String(sshd.port), "--relay", relay.url, "--name", "made-key"], {
      XDG_CONFIG_HOME: home,
    });
    let listener: AgentProcess | undefined;
    try {
      const printed = await made.waitFor(
        /^visitors connect with: BURROW_CONNECT_KEY=(\S+) agent connect made-key --relay (\S+) --listen 127\.0\.0\.1:2222 \(kept in (\S+)\)$/,
      );
      expect(printed[2]).toBe(new URL(relay.url).origin);
      const port = await freePort();
      listener = new AgentProcess("node", ["connect", "made-key", "--relay", printed[2]!, "--listen", `127.0.0.1:${port}`], {
        BURROW_CONNECT_KEY: printed[1]!,
      });
      await listener.waitFor(/^connected to tunnel made-key: connect to 127\.0\.0\.1:\d+$/);
      const result = await sshRun("ssh", [...sshd.sshOptions, "-p", String(port), sshd.target, "echo via listen"]);
      expect(result).toMatchObject({ code: 0, stdout: "via listen\n" });
    } finally {
      await listener?.stop("SIGINT");
      await made.stop("SIGINT");
      rmSync(home, { recursive: true, force: true });
    }
  });

  describe("a TCP and an HTTP tunnel from one agent and one burrow.toml", () => {
    let agent: AgentProcess;
    const urls: Record<string, string> = {};

    beforeAll(async () => {
      const config = join(dir, "burrow.toml");
      writeFileSync(
        config,
        [
          `relay = "${relay.url}"`,
          "",
          "[[tunnel]]",
          'name = "files"',
          `tcp = "${sshd.port}"`,
          'connect-key-file = "keys"',
          "",
          "[[tunnel]]",
          'name = "site"',
          `port = ${origin.port}`,
          "",
        ].join("\n"),
      );
      // From another folder: the key file's path is the config file's, not the working directory's.
      agent = new AgentProcess({ name: "node", command: (args) => agentCommand("node", args), cwd: tmpdir() }, [
        "--config",
        config,
      ]);
      for (let from = 0; Object.keys(urls).length < 2; ) {
        const match = await agent.waitFor(/^tunnel (\S+) is up: (\S+) -> /, { from });
        urls[match[1]!] = match[2]!;
        from = agent.lines.indexOf(match.input, from) + 1;
      }
    });

    afterAll(async () => {
      await agent?.stop("SIGINT");
    });

    it("serves both at once: ssh through the TCP one, a web page through the HTTP one", async () => {
      const files = new TunnelSsh(sshd, "files", proxyCommand("node", relay, { file: keys }));
      const [ssh, page] = await Promise.all([files.ssh("echo from files"), visit(at(urls.site!, "/status/201"))]);
      expect(ssh).toMatchObject({ code: 0, stdout: "from files\n" });
      expect(page.status).toBe(201);
      expect(agent.output).toContain(`tunnel files is up: ${urls.files} -> tcp localhost:${sshd.port}`);
    });

    it("refuses connect to the HTTP tunnel with not-tcp, saying to open it in a browser", async () => {
      const refused = await connect("site", ["--key-file", keys]);
      expect(refused.code).toBe(3);
      expect(refused.output).toContain('error: the relay refused the tunnel: tunnel "site" is an HTTP tunnel');
      expect(refused.output).toContain(
        "hint: open the tunnel's URL in a browser; `agent connect` is for tunnels started with --tcp",
      );
    });
  });
});
