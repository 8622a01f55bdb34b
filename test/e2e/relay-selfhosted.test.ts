// The self-hosted relay (`agent relay`) on Node, Bun and Deno, with a Node agent and a real
// origin: both transports, a visitor's WebSocket, what --data keeps across kill -9, a graceful
// stop that agents come back from, TLS with a certificate made here, and the errors it starts with.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Child, freePort } from "../_process.ts";
import { Relay, relayCommand } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

const RUNTIMES = ["node", "bun", "deno"] as const;
const TOKENS = "alice:alice-token-0123456789,bob:bob-token-0123456789,carol:carol-token-0123456789";

function agentArgs(relay: Relay, origin: Origin, name: string, token: string, ...more: string[]): string[] {
  return ["--relay", relay.url, "--port", String(origin.port), "--name", name, "--token", token, "--inspect", "false", ...more];
}

/** A visitor's WebSocket to `url`, dialing 127.0.0.1 with the URL's Host. */
function connect(url: string): WebSocket {
  const target = new URL(url.replace(/^http/, "ws"));
  const host = target.host;
  target.hostname = "127.0.0.1";
  return new WebSocket(target.href, { headers: { host } });
}

/** The origin's socket number `index` once it exists (the visitor's upgrade reached it). */
async function expectSocket(origin: Origin, index: number): Promise<WebSocket> {
  for (;;) {
    const socket = origin.sockets[index];
    if (socket) return socket as unknown as WebSocket;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.each(RUNTIMES)("the self-hosted relay on %s", (runtime) => {
  let relay: Relay;
  let origin: Origin;
  const agents: AgentProcess[] = [];
  const start = async (args: string[]) => {
    const agent = await AgentProcess.start("node", args);
    agents.push(agent);
    return agent;
  };

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      Relay.start({
        launcher: `selfhost-${runtime}`,
        vars: { BURROW_TOKENS: TOKENS, RESUME_SECONDS: "5", TUNNELS_PER_TOKEN: "1" },
      }),
      Origin.start(),
    ]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await relay?.dispose();
    await origin?.close();
  });

  it("says it is a Burrow relay at /_burrow/info", async () => {
    const answer = await visit(`${relay.url}/_burrow/info`);
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body.toString())).toMatchObject({ burrow: true });
  });

  it("passes agent doctor's checks, both transports and the token", async () => {
    const doctor = new AgentProcess("node", ["doctor", "--relay", relay.url, "--token", "alice-token-0123456789"]);
    expect(await doctor.exited, doctor.output).toBe(0);
    for (const step of ["relay", "websocket", "https"]) expect(doctor.output).toMatch(new RegExp(`^ok +${step} `, "m"));
    expect(doctor.output).toMatch(/^ok +token +the relay accepts the token/m);
    expect(doctor.output).toMatch(/^verdict: the agent will use the WebSocket transport$/m);
  });

  it("serves a tunnel through an agent on either transport", async () => {
    for (const transport of ["websocket", "https"]) {
      const agent = await start(
        agentArgs(relay, origin, `${transport}-${runtime}`, "alice-token-0123456789", "--transport", transport),
      );
      expect(agent.url).toBe(`http://${transport}-${runtime}.localhost:${relay.port}`);
      const body = Buffer.alloc(300_000, 7);
      const answer = await visit(at(agent.url, "/echo?x=1"), { method: "POST", body });
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.body.toString())).toMatchObject({ method: "POST", url: "/echo?x=1", length: body.length });
      expect((await visit(`${relay.url}/t/${transport}-${runtime}/bytes/100000`)).body.length).toBe(100_000);
      // Alice's token holds one tunnel at a time here (TUNNELS_PER_TOKEN=1).
      agent.signal("SIGINT");
      expect(await agent.exited).toBe(0);
    }
  });

  it("carries a visitor's WebSocket both ways", async () => {
    const agent = await start(agentArgs(relay, origin, `ws-${runtime}`, "alice-token-0123456789"));
    const ws = connect(at(agent.url, "/ws/echo"));
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    const echoed = new Promise<string>((resolve) => ws.once("message", (data: Buffer) => resolve(data.toString())));
    ws.send("through the self-hosted relay");
    expect(await echoed).toBe("through the self-hosted relay");
    ws.close();
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
  });

  it("closes a visitor WebSocket that reads nothing once 16 MiB wait in its socket, and the origin's with it", async () => {
    const name = `sink-${runtime}`;
    const agent = await start(agentArgs(relay, origin, name, "alice-token-0123456789"));
    const before = origin.sockets.length;
    // A visitor by hand: the handshake, one masked text frame (mask key 0), then no reading.
    const visitor = net.connect(relay.port, "127.0.0.1");
    visitor.on("error", () => {});
    visitor.write(
      `GET /ws/hash HTTP/1.1\r\nHost: ${name}.localhost:${relay.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    const head = await new Promise<string>((resolve) => visitor.once("data", (data: Buffer) => resolve(data.toString("latin1"))));
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    visitor.pause();
    const ask = Buffer.from("send 25165824");
    visitor.write(Buffer.concat([Buffer.from([0x81, 0x80 | ask.length, 0, 0, 0, 0]), ask]));
    // The origin's 24 MiB message passes the relay's 16 MiB bound for what waits in the
    // visitor's socket: the visitor is closed (1008), and the origin's socket then too.
    const socket = await expectSocket(origin, before);
    await new Promise((resolve) => (socket.readyState === WebSocket.CLOSED ? resolve(null) : socket.once("close", resolve)));
    visitor.destroy();
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
  });

  // Bun.serve strips a handler's Content-Length from every ReadableStream body and frames it
  // chunked (oven-sh/bun#10507, open as of Bun 1.4.5); its node:http keeps it. When Bun fixes
  // it, this fails: drop the row from docs/relay-selfhosted.md's table.
  it(
    runtime === "bun"
      ? "sends a streamed response of known length chunked, since Bun.serve drops its Content-Length"
      : "sends a streamed response of known length with its Content-Length",
    async () => {
      const agent = await start(agentArgs(relay, origin, `length-${runtime}`, "alice-token-0123456789"));
      const answer = await visit(at(agent.url, "/bytes/3000000"));
      expect(answer.body.length).toBe(3_000_000);
      if (runtime === "bun") {
        expect(answer.headers["content-length"]).toBeUndefined();
        expect(answer.headers["transfer-encoding"]).toBe("chunked");
      } else {
        expect(answer.headers["content-length"]).toBe("3000000");
      }
      agent.signal("SIGINT");
      expect(await agent.exited).toBe(0);
    },
  );

  it("stops on SIGTERM within seconds, telling agents to reconnect, and their names come back", async () => {
    const name = `back-${runtime}`;
    const agent = await start(agentArgs(relay, origin, name, "bob-token-0123456789"));
    const from = agent.lines.length;
    const stopping = Date.now();
    expect(await relay.stop("SIGTERM")).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(4000);
    await relay.restart();
    const back = Date.now();
    expect(await agent.ready(from)).toBe(`http://${name}.localhost:${relay.port}`);
    expect(Date.now() - back).toBeLessThan(10_000);
    expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
  }, 40_000);

  it("tells an agent on the HTTPS transport to reconnect on SIGTERM, in the answer to its waiting poll", async () => {
    const name = `back-https-${runtime}`;
    const agent = await start([...agentArgs(relay, origin, name, "bob-token-0123456789"), "--transport", "https"]);
    const from = agent.lines.length;
    expect(await relay.stop("SIGTERM")).toBe(0);
    // Not a failed poll (the relay gone): the relay's own word, 1012.
    await agent.waitFor(/^connection lost \(.*1012.*\); reconnecting/, { from });
    await relay.restart();
    expect(await agent.ready(from)).toBe(`http://${name}.localhost:${relay.port}`);
    expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
    agent.signal("SIGINT");
    expect(await agent.exited).toBe(0);
  }, 40_000);

  it("keeps names' owners and tokens' tunnels in --data across kill -9", async () => {
    const name = `kept-${runtime}`;
    // Carol takes the name and stops: on a relay with tokens, the name stays her token's.
    const first = await start(agentArgs(relay, origin, name, "carol-token-0123456789"));
    first.signal("SIGINT");
    expect(await first.exited).toBe(0);
    await relay.restart("SIGKILL");
    const bob = new AgentProcess("node", agentArgs(relay, origin, name, "bob-token-0123456789"));
    agents.push(bob);
    expect(await bob.exited).toBe(3);
    expect(bob.output).toMatch(/the name "kept-\w+" belongs to another token/);
    // Carol has it back, and her token's one tunnel (TUNNELS_PER_TOKEN=1) is counted in the
    // data directory: after another kill -9, a second tunnel of hers is refused.
    const carol = await start(agentArgs(relay, origin, name, "carol-token-0123456789"));
    const from = carol.lines.length;
    expect(readdirSync(join(relay.dataDir, "gates")).some((file) => file.startsWith("token"))).toBe(true);
    await relay.restart("SIGKILL");
    await carol.ready(from);
    const second = new AgentProcess("node", agentArgs(relay, origin, `other-${runtime}`, "carol-token-0123456789"));
    agents.push(second);
    expect(await second.exited).toBe(3);
    expect(second.output).toMatch(/TUNNELS_PER_TOKEN/);
    expect((await visit(at(carol.url, "/echo"))).status).toBe(200);
  }, 60_000);
});

describe.each(RUNTIMES)("the self-hosted relay on %s, serving TLS itself", (runtime) => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-relay-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess | undefined;

  beforeAll(async () => {
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
        ...["-addext", "basicConstraints=critical,CA:TRUE"],
      ],
      { stdio: "ignore" },
    );
    // By path: Node refuses a wildcard of one label (*.localhost) in a certificate.
    [relay, origin] = await Promise.all([
      Relay.start({ launcher: `selfhost-${runtime}`, vars: { BASE_DOMAIN: "" }, args: ["--tls-cert", cert, "--tls-key", key] }),
      Origin.start(),
    ]);
  }, 60_000);

  afterAll(async () => {
    await agent?.stop("SIGKILL");
    await relay?.dispose();
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const started = async () =>
    (agent ??= await AgentProcess.start("node", [
      ...["--relay", relay.url, "--port", String(origin.port), "--name", `tls-${runtime}`, "--ca", cert, "--inspect", "false"],
    ]));

  it("serves a tunnel to an agent that trusts its certificate with --ca", async () => {
    agent = await started();
    expect(agent.url).toBe(`https://localhost:${relay.port}/t/tls-${runtime}/`);
    const status = await new Promise<number>((resolve, reject) => {
      https
        .get(at(agent!.url, "/echo"), { ca: [readFileSync(cert)] }, (response) => {
          response.resume();
          resolve(response.statusCode!);
        })
        .on("error", reject);
    });
    expect(status).toBe(200);
  });

  it("tells the origin its own address as the public host, not the Host a visitor sent", async () => {
    const target = new URL(at((await started()).url, "/echo"));
    const headers = await new Promise<Record<string, string>>((resolve, reject) => {
      https
        .get(target, { ca: [readFileSync(cert)], servername: "localhost", headers: { host: "evil.example" } }, (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString()).headers));
        })
        .on("error", reject);
    });
    expect(headers["x-forwarded-host"]).toBe(`localhost:${relay.port}`);
    expect(headers["x-forwarded-proto"]).toBe("https");
  });
});

describe.each(RUNTIMES)("agent relay on %s refuses to start, with the cause and a hint", (runtime) => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-relay-errors-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; output: string }> {
    const [command, argv] = relayCommand(runtime, args);
    const child = new Child(`relay:${runtime}`, command, argv, { env: { ...process.env, ...env } });
    const timer = setTimeout(() => child.signalGroup("SIGKILL"), 20_000);
    const status = await child.exited;
    clearTimeout(timer);
    return { status, output: child.output };
  }

  it("when the port is in use", async () => {
    const port = await freePort();
    const taken = net.createServer().listen(port, "127.0.0.1");
    await new Promise((resolve) => taken.once("listening", resolve));
    try {
      const { status, output } = await run(["--port", String(port), "--host", "127.0.0.1"]);
      expect(status).toBe(2);
      expect(output).toMatch(/cannot listen on 127\.0\.0\.1:\d+: the port is already in use/);
      expect(output).toMatch(/hint: .*--port/);
    } finally {
      taken.close();
    }
  });

  it("when the certificate is unreadable or not a certificate", async () => {
    const junk = join(dir, "junk.pem");
    writeFileSync(junk, "not a certificate\n");
    const missing = await run(["--port", "0", "--tls-cert", join(dir, "nope.pem"), "--tls-key", junk]);
    expect(missing.status).toBe(2);
    expect(missing.output).toMatch(/cannot read the certificate .*nope\.pem \(--tls-cert\)/);
    const bad = await run(["--port", "0", "--tls-cert", junk, "--tls-key", junk]);
    expect(bad.status).toBe(2);
    expect(bad.output).toMatch(/--tls-cert .*junk\.pem holds no valid certificate/);
    expect(bad.output).toMatch(/hint: give the PEM file/);
  });

  it("when it cannot write the data directory", async () => {
    const file = join(dir, "a-file");
    writeFileSync(file, "");
    const { status, output } = await run(["--port", "0", "--data", join(file, "data")]);
    expect(status).toBe(2);
    expect(output).toMatch(/cannot write to the data directory .*a-file\/data \(--data\)/);
    expect(output).toMatch(/hint: give a directory this user may write/);
  });

  it("when a variable has a bad value", async () => {
    const { status, output } = await run(["--port", "0"], { MAX_STREAMS_PER_TUNNEL: "-1" });
    expect(status).toBe(2);
    expect(output).toMatch(/MAX_STREAMS_PER_TUNNEL="-1" is not a whole number above 0/);
    expect(output).not.toMatch(/using the default/);
  });
});

describe("the self-hosted relay's visitor address", () => {
  let origin: Origin;
  const relays: Relay[] = [];
  let agentUrl = "";
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    origin = await Origin.start();
  });

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await Promise.all(relays.map((relay) => relay.dispose()));
    await origin?.close();
  });

  async function echoHeaders(args: string[], name: string, forwardedFor: string, more: Record<string, string> = {}) {
    const relay = await Relay.start({ launcher: "selfhost-node", args });
    relays.push(relay);
    const agent = await AgentProcess.start("node", [
      "--relay",
      relay.url,
      "--port",
      String(origin.port),
      "--name",
      name,
      "--inspect",
      "false",
    ]);
    agents.push(agent);
    agentUrl = agent.url;
    const answer = await visit(at(agentUrl, "/echo"), {
      headers: { "x-forwarded-for": forwardedFor, "x-real-ip": "6.6.6.6", ...more },
    });
    return (JSON.parse(answer.body.toString()) as { headers: Record<string, string> }).headers;
  }

  it("is the socket's peer, whatever X-Forwarded-For a visitor sends", async () => {
    const spoofed = { "x-forwarded-host": "evil.example", "x-forwarded-proto": "https" };
    const headers = await echoHeaders([], "addr-direct", "6.6.6.6", spoofed);
    expect(headers["x-real-ip"]).toBe("127.0.0.1");
    expect(headers["x-forwarded-for"]).toBe("127.0.0.1");
    // Nor are its X-Forwarded-Host and -Proto believed: only a --trust-proxy may state them.
    expect(headers["x-forwarded-host"]).toBe(new URL(agentUrl).host);
    expect(headers["x-forwarded-proto"]).toBe("http");
  });

  it("comes from X-Forwarded-For, rightmost untrusted hop first, when the peer is a --trust-proxy", async () => {
    const headers = await echoHeaders(
      ["--trust-proxy", "127.0.0.1,10.0.0.0/8"],
      "addr-proxied",
      "6.6.6.6, 203.0.113.7, 10.1.2.3",
    );
    expect(headers["x-real-ip"]).toBe("203.0.113.7");
    expect(headers["x-forwarded-for"]).toBe("6.6.6.6, 203.0.113.7");
    expect(headers["x-forwarded-proto"]).toBe("http");
  });
});
