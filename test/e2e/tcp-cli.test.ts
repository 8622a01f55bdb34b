// TCP tunnels' command line, as a user meets it: the settings the agent refuses (each with the
// command to type), the shapes that work (`agent tcp 22`, [[tunnel]] tcp), and what an agent
// or a visitor's `agent connect` says against a relay from before TCP tunnels. No relay
// process: a stand-in relay that speaks frames by script (test/_scripted-relay.ts).
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ConnectFrame, encodeFrame, FrameType, type HelloFrame, hashConnectKey, PROTOCOL_VERSION } from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { afterEach, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand } from "../_agent.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

const KEY = "a-connect-key-0123456789";
const agents: AgentProcess[] = [];
const cleanups: (() => Promise<unknown> | undefined)[] = [];

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "burrow-tcp-cli-"));
}

/** A file in a fresh directory. */
function file(name: string, text: string): string {
  const path = join(tempDir(), name);
  writeFileSync(path, text);
  return path;
}

/** An agent on Node, run in `cwd` (where it looks for burrow.toml), with a config directory of its own. */
function agent(args: string[], cwd = tempDir(), env: NodeJS.ProcessEnv = {}): AgentProcess {
  const child = new AgentProcess(
    { name: "node", command: (argv) => agentCommand("node", argv), cwd },
    // The command (connect) comes first; no inspector, so that tests in parallel share no port.
    [...args, "--inspect", "false"],
    { XDG_CONFIG_HOME: tempDir(), ...env },
  );
  agents.push(child);
  return child;
}

/** A stand-in relay on 127.0.0.1 (answering INFO_PATH with `info`, if given); closed after the test. */
async function scriptedRelay(
  onHello?: (connection: RelayConnection, index: number) => void,
  info?: object,
): Promise<ScriptedRelay> {
  const relay = await ScriptedRelay.start(onHello ?? (() => {}), info);
  cleanups.push(() => relay.close());
  return relay;
}

/** Ready as this relay says it, `tcp` as the hello asked. */
function readyFor(connection: RelayConnection, hello: HelloFrame): void {
  connection.send({
    type: FrameType.Ready,
    name: hello.name,
    url: `http://${hello.name}.localhost:9`,
    open: true,
    session: `session-of-${hello.name}`,
    resumed: false,
    received: 0,
    tcp: hello.tcp,
  });
}

describe("errors about TCP tunnels' settings", () => {
  const shortKey = file("short.key", "# the team's keys\nshort\n");
  const empty = file("empty.key", "# no key yet\n\n");
  it.each([
    [["--tcp", "abc"], 'error: --tcp "abc" is not a port or HOST:PORT', "hint: for example --tcp 22, or --tcp 10.0.0.5:5432"],
    [["--tcp", "70000"], 'error: --tcp "70000" is not a port or HOST:PORT', "hint: for example --tcp 22"],
    [
      ["--tcp", "22", "--basic-auth", "a:b"],
      "error: --basic-auth checks HTTP requests; a --tcp tunnel carries bytes, so it cannot apply",
      "hint: a TCP tunnel admits visitors by connect key (--connect-key-file) and address (--allow-ip)",
    ],
    [
      ["--tcp", "22", "--verify-webhook", "github:secret"],
      "error: --verify-webhook checks HTTP requests; a --tcp tunnel carries bytes",
      "hint: a TCP tunnel admits visitors by connect key",
    ],
    [
      ["--tcp", "22", "--port", "80"],
      "error: --port and --tcp are both given",
      "hint: a tunnel forwards to one origin: give --port, --origin, --dir or --tcp",
    ],
    [
      ["--tcp", "22", "--connect-key-file", empty],
      `error: the connect key file ${empty} holds no key`,
      "hint: put one key per line (make one with: openssl rand -base64 24)",
    ],
    [
      ["--tcp", "22", "--connect-key-file", shortKey],
      `error: a key in ${shortKey} is 5 characters; keys need at least 16`,
      "hint: make one with: openssl rand -base64 24",
    ],
    [
      ["--tcp", "22", "--connect-key-file", "/nonexistent/burrow.keys"],
      "error: cannot read the connect key file /nonexistent/burrow.keys: ENOENT",
      "hint: give a file with one key per line",
    ],
    [
      ["--port", "8000", "--connect-key-file", shortKey],
      "error: --connect-key-file applies to a --tcp tunnel only",
      "hint: leave it out, or add --tcp PORT",
    ],
    [["tcp"], "error: `agent tcp` needs a port or HOST:PORT", "hint: for example: agent tcp 22, or agent --tcp 22"],
    [["tcp", "ssh"], "error: `agent tcp` needs a port or HOST:PORT", "hint: for example: agent tcp 22, or agent --tcp 22"],
    [
      ["tcp", "22", "--port", "80"],
      "error: `tcp 22` and --port both name the local server",
      "hint: give it once: agent --tcp 22",
    ],
    [
      ["tcp", "22", "5432"],
      'error: unexpected argument "5432" after `tcp 22`',
      "hint: one tunnel per command: agent --tcp 22; several go in burrow.toml's [[tunnel]] tables",
    ],
    [
      ["udp", "53"],
      "error: Burrow tunnels HTTP (and WebSockets) and TCP, not udp",
      "hint: for an HTTP server: agent --port 8000; for TCP: agent --tcp 22",
    ],
  ])("answers %j with exit 2 and the fix", async (argv, message, hint) => {
    const child = agent([...argv, "--relay", "http://127.0.0.1:9"]);
    expect(await child.exited).toBe(2);
    expect(child.output).toContain(message);
    expect(child.output).toContain(hint);
  });

  it.each([
    [
      'relay = "http://127.0.0.1:9"\n[[tunnel]]\nname = "devbox"\ntcp = "abc"\n',
      'error: burrow.toml line 4, key tcp: "abc" is not a port or HOST:PORT',
    ],
    [
      'relay = "http://127.0.0.1:9"\n[[tunnel]]\nname = "devbox"\ntcp = 22\nbasic-auth = ["a:b"]\n',
      "error: burrow.toml line 5, key basic-auth: checks HTTP requests; a --tcp tunnel carries bytes, so it cannot apply",
    ],
    [
      'relay = "http://127.0.0.1:9"\n[[tunnel]]\nname = "devbox"\ntcp = 22\nport = 8000\n',
      "error: --port and --tcp are both given",
    ],
  ])("names the line of a [[tunnel]] table's bad TCP setting: %j", async (toml, message) => {
    const dir = tempDir();
    writeFileSync(join(dir, "burrow.toml"), toml);
    const child = agent([], dir);
    expect(await child.exited).toBe(2);
    expect(child.output).toContain(message);
  });
});

describe("errors of agent connect", () => {
  it.each([
    [
      ["connect"],
      "error: agent connect needs the tunnel's name",
      "hint: for example: agent connect devbox --listen 127.0.0.1:2222",
    ],
    [["--debug", "connect", "devbox"], "error: connect must come first", "hint: agent connect devbox [flags]"],
    [
      ["connect", "--listen", "127.0.0.1:2222", "--key", KEY],
      "error: agent connect needs the tunnel's name",
      "hint: for example: agent connect devbox --listen 127.0.0.1:2222",
    ],
    [
      ["connect", "devbox", "--key", KEY],
      "error: agent connect needs --listen HOST:PORT or --stdio",
      "hint: --listen 127.0.0.1:2222 for any client (ssh -p 2222 localhost), --stdio for ssh's ProxyCommand",
    ],
    [
      ["connect", "devbox", "--listen", "127.0.0.1:2222", "--stdio", "--key", KEY],
      "error: --listen and --stdio are both given",
      "hint: --listen 127.0.0.1:2222 for any client",
    ],
    [
      ["connect", "devbox", "--listen", "127.0.0.1:2222"],
      "error: agent connect devbox needs the tunnel's key",
      "hint: its owner's agent printed it when the tunnel started: pass it with --key-file FILE or BURROW_CONNECT_KEY",
    ],
    [
      ["connect", "devbox", "--stdio", "--key-file", "/nonexistent/devbox.key"],
      "error: cannot read the key file /nonexistent/devbox.key: ENOENT",
      "hint: give a file whose first line is the tunnel's key",
    ],
    [
      ["connect", "devbox", "--listen", "2222:localhost", "--key", KEY],
      'error: --listen "2222:localhost" is not HOST:PORT',
      "hint: for example --listen 127.0.0.1:2222",
    ],
    [
      ["connect", "Dev_Box", "--listen", "127.0.0.1:2222", "--key", KEY],
      'error: --name "Dev_Box" is not a tunnel name',
      "hint: use 1 to 63 lowercase letters",
    ],
  ])("answers %j with exit 2 and the fix", async (argv, message, hint) => {
    const child = agent([...argv, "--relay", "http://127.0.0.1:9"]);
    expect(await child.exited).toBe(2);
    expect(child.output).toContain(message);
    expect(child.output).toContain(hint);
  });

  it("names the port of a --listen address that is taken, before it dials the relay", async () => {
    const holder = net.createServer();
    holder.listen(0, "127.0.0.1");
    await new Promise((resolve) => holder.once("listening", resolve));
    cleanups.push(() => new Promise((resolve) => holder.close(resolve)));
    const { port } = holder.address() as net.AddressInfo;
    const relay = await scriptedRelay();
    const child = agent(["connect", "devbox", "--listen", `127.0.0.1:${port}`, "--relay", relay.url], undefined, {
      BURROW_CONNECT_KEY: KEY,
    });
    expect(await child.exited).toBe(2);
    expect(child.output).toContain(`error: cannot listen on 127.0.0.1:${port}: the port is in use`);
    expect(child.output).toContain("hint: pick another port with --listen, or stop what holds it");
    expect(relay.connections).toHaveLength(0);
  });
});

describe("TCP tunnels' shapes", () => {
  it("agent tcp 22 says a TCP hello with its keys' hashes and comes up as --tcp 22 does", async () => {
    const relay = await scriptedRelay(async (connection) => readyFor(connection, await connection.hello));
    const keys = file("devbox.keys", `${KEY}\nsecond-key-0123456789\n`);
    const child = agent(["tcp", "22", "--name", "devbox", "--connect-key-file", keys, "--relay", relay.url]);
    await child.ready();
    const hello = await (await relay.connection(0)).hello;
    expect(hello).toMatchObject({ name: "devbox", tcp: true, rules: { basicAuth: [], webhooks: [] } });
    expect(hello.rules.connectKeys).toEqual([
      await hashConnectKey("devbox", KEY),
      await hashConnectKey("devbox", "second-key-0123456789"),
    ]);
    expect(child.output).toMatch(/^tunnel devbox is up: http:\/\/devbox\.localhost:9 -> tcp localhost:22/m);
  });

  it("serves a [[tunnel]] table's tcp beside an HTTP table from one burrow.toml", async () => {
    const relay = await scriptedRelay(async (connection) => readyFor(connection, await connection.hello));
    const dir = tempDir();
    writeFileSync(join(dir, "devbox.keys"), `${KEY}\n`);
    writeFileSync(
      join(dir, "burrow.toml"),
      `relay = "${relay.url}"\n[[tunnel]]\nname = "devbox"\ntcp = "127.0.0.1:5432"\nconnect-key-file = "devbox.keys"\nallow-ip = ["10.0.0.0/8"]\n[[tunnel]]\nname = "web"\nport = 8000\n`,
    );
    const child = agent([], dir);
    await child.waitFor(/^tunnel devbox is up: \S+ -> tcp 127\.0\.0\.1:5432/);
    await child.waitFor(/^tunnel web is up: \S+ -> http:\/\/localhost:8000/);
    const hellos = await Promise.all([0, 1].map(async (i) => (await relay.connection(i)).hello));
    const devbox = hellos.find((h) => h.name === "devbox")!;
    const web = hellos.find((h) => h.name === "web")!;
    expect(devbox).toMatchObject({ tcp: true, rules: { allowIp: ["10.0.0.0/8"] } });
    expect(devbox.rules.connectKeys).toEqual([await hashConnectKey("devbox", KEY)]);
    expect(web).toMatchObject({ tcp: false, rules: { connectKeys: [] } });
  });
});

describe("against a relay from before TCP tunnels", () => {
  it("an agent --tcp stops, saying to upgrade the relay, when its Ready does not say tcp", async () => {
    // An older relay's Ready: seven fields, none for tcp.
    const relay = await scriptedRelay(async (connection) => {
      const hello = await connection.hello;
      connection.sendBytes(encode([FrameType.Ready, hello.name, "http://devbox.localhost:9", true, "s", false, 0]));
    });
    const child = agent(["--tcp", "22", "--name", "devbox", "--relay", relay.url]);
    expect(await child.exited).toBe(3);
    expect(child.output).toMatch(
      new RegExp(
        `^error: the relay at ${relay.url} does not carry TCP tunnels: it is older than this agent \\(\\S+\\); its Ready does not say tcp`,
        "m",
      ),
    );
    expect(child.output).toContain("hint: upgrade the relay (redeploy it, or update the package that runs `agent relay`)");
    expect(child.output).not.toMatch(/is up/);
    expect(relay.connections).toHaveLength(1);
  });

  it("agent connect stops, saying the relay is older and carries no TCP tunnels, when its Connect is refused as a bad hello", async () => {
    const relay = await scriptedRelay();
    const child = agent(["connect", "devbox", "--listen", "127.0.0.1:0", "--relay", relay.url], undefined, {
      BURROW_CONNECT_KEY: KEY,
    });
    const connection = await relay.connection(0);
    const connect = (await connection.next((frame) => frame.type === FrameType.Connect)) as ConnectFrame;
    expect(connect).toMatchObject({ name: "devbox", key: KEY, resume: null });
    // What a relay from before TCP tunnels answers any first frame that is not a Hello.
    connection.refuse("bad-hello", "the first frame on a connection must be a Hello");
    expect(await child.exited).toBe(3);
    expect(child.output).toMatch(
      new RegExp(
        `^error: the relay at ${relay.url} does not carry TCP tunnels: it is older than this agent \\(\\S+\\); it took the Connect for an agent's hello`,
        "m",
      ),
    );
    expect(child.output).toContain("hint: upgrade the relay (redeploy it, or update the package that runs `agent relay`)");
    expect(relay.connections).toHaveLength(1);
  });

  it("agent doctor connect says the relay is from before TCP tunnels, and fails the key step with exit 3", async () => {
    // An older relay: its INFO_PATH says nothing of tcp, and it refuses a Connect as a bad hello.
    const relay = await scriptedRelay(undefined, { burrow: true, protocol: PROTOCOL_VERSION });
    // Doctor's connections: the WebSocket step's (a heartbeat only), then the key step's.
    const refusing = (async () => {
      for (let i = 0; i < 2; i++) {
        const connection = await relay.connection(i);
        void connection
          .next((frame) => frame.type === FrameType.Connect)
          .then(
            () => connection.refuse("bad-hello", "the first frame on a connection must be a Hello"),
            () => {},
          );
      }
    })();
    void refusing.catch(() => {});
    const child = agent(["doctor", "connect", "devbox", "--relay", relay.url], undefined, { BURROW_CONNECT_KEY: KEY });
    expect(await child.exited).toBe(3);
    expect(child.output).toContain(
      `ok   relay      a Burrow relay speaking protocol ${PROTOCOL_VERSION}, as this agent does, from before TCP tunnels (agent --tcp and agent connect need a newer one)`,
    );
    expect(child.output).toContain(
      "FAIL key        the relay refused the Connect: it is older than this agent and carries no TCP tunnels",
    );
    expect(child.output).toMatch(
      /^ {16}hint: upgrade the relay \(redeploy it, or update the package that runs `agent relay`\)$/m,
    );
    expect(child.output).toContain("verdict: the relay refuses this visitor; see the hint above");
  });

  it("agent doctor --tcp fails the token step when the relay takes a TCP hello for an HTTP tunnel's", async () => {
    const relay = await scriptedRelay((connection) => void connection.ready(), { burrow: true, protocol: PROTOCOL_VERSION });
    const child = agent(["doctor", "--tcp", "22", "--relay", relay.url]);
    expect(await child.exited).toBe(3);
    expect(child.output).toContain(
      "FAIL token      the relay took a TCP tunnel's hello for an HTTP tunnel's: it is older than this agent and carries no TCP tunnels",
    );
    const hello = await (await relay.connection(1)).hello;
    expect(hello).toMatchObject({ tcp: true, name: expect.stringMatching(/^doctor-/) });
  });

  it("agent connect stops the same way when a Ready to its Connect does not say tcp", async () => {
    const relay = await scriptedRelay();
    const child = agent(["connect", "devbox", "--listen", "127.0.0.1:0", "--relay", relay.url], undefined, {
      BURROW_CONNECT_KEY: KEY,
    });
    const connection = await relay.connection(0);
    await connection.next((frame) => frame.type === FrameType.Connect);
    connection.sendBytes(
      encodeFrame({ type: FrameType.Ready, name: "devbox", url: "", open: true, session: "s", resumed: false, received: 0 }),
    );
    expect(await child.exited).toBe(3);
    expect(child.output).toContain("does not carry TCP tunnels: it is older than this agent");
    expect(child.output).toContain("hint: upgrade the relay");
  });
});
