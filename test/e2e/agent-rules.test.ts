import { mkdtempSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CloseCode, hashBasicCredentials } from "@burrow/protocol";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, type RuntimeName } from "../_agent.ts";
import { Relay } from "../_relay.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

const agents: AgentProcess[] = [];
const relays: ScriptedRelay[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
  await Promise.all(relays.splice(0).map((relay) => relay.close()));
});

/** A config directory of its own, so that each agent has its own claim files. */
function configHome(): string {
  return mkdtempSync(join(tmpdir(), "burrow-config-"));
}

function agent(runtime: RuntimeName, relayUrl: string, args: string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  const process = new AgentProcess(runtime, ["--port", "9", "--relay", relayUrl, "--heartbeat", "5", ...args], {
    XDG_CONFIG_HOME: configHome(),
    ...env,
  });
  agents.push(process);
  return process;
}

async function scripted(onHello?: (connection: RelayConnection, index: number) => void): Promise<ScriptedRelay> {
  const relay = await ScriptedRelay.start(onHello);
  relays.push(relay);
  return relay;
}

describe("agent, against a scripted relay", () => {
  it("sends its visitor rules in the hello, hashed, and prints them once without a password or secret", async () => {
    const relay = await scripted();
    const tokenFile = join(configHome(), "token");
    writeFileSync(tokenFile, "  s3cret-token  \nsecond line\n");
    const process = agent("node", relay.url, [
      "--name",
      "rules-app",
      "--token-file",
      tokenFile,
      "--basic-auth",
      "alice:pa:ss",
      "--basic-auth=bob:hunter2",
      "--allow-ip",
      "10.0.0.0/8",
      "--allow-ip",
      "::1",
      "--verify-webhook",
      "github:gh-secret",
      "--verify-webhook",
      "hmac-sha256:X-Signature:other-secret",
    ]);
    await process.ready();
    const hello = await (await relay.connection(0)).hello;
    expect(hello.token).toBe("s3cret-token");
    expect(hello.rules).toEqual({
      basicAuth: [
        await hashBasicCredentials("rules-app", "alice", "pa:ss"),
        await hashBasicCredentials("rules-app", "bob", "hunter2"),
      ],
      allowIp: ["10.0.0.0/8", "::1"],
      webhooks: [
        { kind: "github", header: "x-hub-signature-256", secret: "gh-secret" },
        { kind: "hmac-sha256", header: "x-signature", secret: "other-secret" },
      ],
      // An HTTP tunnel gives no connect keys (TCP tunnels do: test/e2e/tcp-cli.test.ts).
      connectKeys: [],
    });
    expect(process.lines.filter((line) => line.startsWith("visitors"))).toEqual([
      "visitors of tunnel rules-app: basic auth for alice, bob; from 10.0.0.0/8, ::1; webhook signatures github (x-hub-signature-256), hmac-sha256 (x-signature)",
    ]);
    for (const secret of ["pa:ss", "hunter2", "gh-secret", "other-secret", "s3cret-token"])
      expect(process.output).not.toContain(secret);
  });

  it("says anyone with the URL may visit, and warns once that the relay is open across reconnects", async () => {
    const relay = await scripted((connection, index) => {
      void connection.ready(true);
      if (index === 0) setImmediate(() => connection.socket.close(1011, "restarting"));
    });
    const process = agent("node", relay.url, ["--name", "open-app"]);
    await process.ready();
    await process.ready(process.lines.findIndex((line) => line.includes("is up")) + 1);
    expect(process.lines).toContain("visitors of tunnel open-app: anyone with the URL");
    expect(process.lines.filter((line) => line.includes("this relay is open"))).toEqual([
      "warning: this relay is open: anyone who can reach it can open tunnels and claim names (its owner can require tokens; see the README's Security section)",
    ]);
  });

  it.each([
    ["name-owned", 'the tunnel name "mine" belongs to another token', "pass the token that owns this name"],
    ["name-reserved", 'the tunnel name "mine" is reserved', "the relay keeps this name for itself: choose another --name"],
    ["too-many-tunnels", "this token holds 5 tunnels; the limit is 5", "stop one of this token's other tunnels"],
    ["name-taken", 'the tunnel name "mine" is in use by another agent', "pick another name with --name"],
  ])(
    "exits 3 when the relay refuses with %s on the first attempt, with the relay's message and a hint",
    async (code, message, hint) => {
      const relay = await scripted((connection) => connection.refuse(code, message));
      const process = agent("node", relay.url, ["--name", "mine"]);
      expect(await process.exited).toBe(3);
      expect(process.output).toContain(`error: the relay refused the tunnel: ${message}`);
      expect(process.output).toContain(`  hint: ${hint}`);
      expect(relay.connections).toHaveLength(1);
    },
  );

  it("backs off and tries again when the relay says it is rate-limited", async () => {
    const relay = await scripted((connection, index) => {
      if (index === 0) connection.refuse("rate-limited", "too many connection attempts from 127.0.0.1; retry in a few seconds");
      else void connection.ready();
    });
    const process = agent("node", relay.url, ["--name", "patient"]);
    await process.ready();
    expect(process.output).toContain(
      "warning: the relay is limiting connection attempts (too many connection attempts from 127.0.0.1; retry in a few seconds); backing off",
    );
  });

  it("keeps asking for its name after a drop while the relay still counts its old connection, saying why once", async () => {
    const relay = await scripted((connection, index) => {
      if (index === 0) {
        void connection.ready().then(() => connection.socket.close(1011, "relay restarting"));
      } else if (index < 3) {
        connection.refuse(
          "name-taken",
          'the tunnel name "comeback" is in use by another agent (it is kept for its agent for 58s more)',
        );
      } else {
        void connection.ready();
      }
    });
    const process = agent("node", relay.url, ["--name", "comeback"]);
    await process.ready();
    await process.ready(process.lines.findIndex((line) => line.includes("is up")) + 1);
    expect(relay.connections).toHaveLength(4);
    expect(process.lines.filter((line) => line.includes("keeps asking"))).toEqual([
      'warning: the relay says the name comeback is taken (the tunnel name "comeback" is in use by another agent (it is kept for its agent for 58s more)); it may still count this agent\'s previous connection as alive, so the agent keeps asking for up to 90s',
    ]);
  });

  it("stops with exit 3 when a newer agent with the same token takes the tunnel over, and does not take it back", async () => {
    const relay = await scripted((connection) => {
      void connection.ready().then(() => connection.socket.close(CloseCode.Replaced, "replaced by a newer connection"));
    });
    const process = agent("node", relay.url, ["--name", "shared"]);
    expect(await process.exited).toBe(3);
    expect(process.output).toContain("error: the tunnel shared was taken over by a newer agent with the same token; stopping");
    expect(relay.connections).toHaveLength(1);
  });

  it.each([
    ["RateLimited", CloseCode.RateLimited],
    ["HelloTimeout", CloseCode.HelloTimeout],
  ])("reconnects after a %s close", async (_name, code) => {
    const relay = await scripted((connection, index) => {
      void connection.ready().then(() => {
        if (index === 0) connection.socket.close(code, "closing");
      });
    });
    const process = agent("node", relay.url, ["--name", "again"]);
    await process.ready();
    await process.ready(process.lines.findIndex((line) => line.includes("is up")) + 1);
    expect(process.output).toMatch(new RegExp(`connection lost \\(${code} closing\\); reconnecting in`));
  });
});

describe("agent, against the real relay", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start();
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("gets its name back at once after a SIGKILL and a restart, through its claim file; another machine's agent may not", async () => {
    const home = configHome();
    const first = agent("node", relay.url, ["--name", "kept-name"], { XDG_CONFIG_HOME: home });
    await first.ready();
    await first.stop("SIGKILL");

    const stranger = agent("node", relay.url, ["--name", "kept-name"]);
    expect(await stranger.exited).toBe(3);
    expect(stranger.output).toContain('the tunnel name "kept-name" is in use by another agent');

    const started = performance.now();
    const again = agent("node", relay.url, ["--name", "kept-name"], { XDG_CONFIG_HOME: home });
    await again.ready();
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(again.output).not.toContain("reconnecting");

    const directory = join(home, "burrow", "claims");
    expect(statSync(directory).mode & 0o777).toBe(0o700);
    const files = readdirSync(directory);
    expect(files).toHaveLength(1);
    expect(statSync(join(directory, files[0]!)).mode & 0o777).toBe(0o600);
  });

  it("prints the public URL with --quiet, and no other information line", async () => {
    const process = agent("node", relay.url, ["--name", "quiet-app", "--quiet"]);
    const url = await process.ready();
    expect(url).toMatch(/^http:\/\/quiet-app\.localhost:\d+$/);
    expect(process.lines.filter((line) => !line.startsWith("warning: "))).toEqual([
      `tunnel quiet-app is up: ${url} -> http://localhost:9`,
    ]);
  });

  it("warns once and keeps its claim in memory when the config directory cannot be written", async () => {
    const readOnly = configHome();
    writeFileSync(join(readOnly, "burrow"), "a file where the directory would go");
    const process = agent("node", relay.url, ["--name", "no-claim-file"], { XDG_CONFIG_HOME: readOnly });
    await process.ready();
    expect(process.lines.filter((line) => line.includes("cannot keep the claim"))).toHaveLength(1);
    expect(process.output).toMatch(
      /warning: cannot keep the claim to the name no-claim-file \(.*\); using one for this run only/,
    );
  });

  it.each(["node", "bun", "deno"] as const)(
    "on %s, stops on SIGHUP with exit 0 and frees the name for another agent at once",
    async (runtime) => {
      const name = `hup-${runtime}`;
      const first = agent(runtime, relay.url, ["--name", name]);
      await first.ready();
      expect(await first.stop("SIGHUP")).toBe(0);
      const next = agent("node", relay.url, ["--name", name]);
      await next.ready();
      expect(next.output).not.toContain("in use");
    },
  );
});
