import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { AgentProcess, agentCommand, type RuntimeName } from "../_agent.ts";
import { entryWhere, inspector } from "../_inspector.ts";
import { Origin } from "../_origin.ts";
import { freePort } from "../_process.ts";
import { Relay, ROOT } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

let relay: Relay;
const agents: AgentProcess[] = [];
const servers: { close(): unknown }[] = [];

beforeAll(async () => {
  relay = await Relay.start();
}, 60_000);

afterAll(async () => {
  await relay?.stop();
});

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
  for (const server of servers.splice(0)) server.close();
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "burrow-config-test-"));
}

/** An agent run in `cwd` (where it looks for burrow.toml), with its own claim files. */
function agentInDir(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}, runtime: RuntimeName = "node"): AgentProcess {
  const agent = new AgentProcess(
    { name: runtime, command: (argv) => agentCommand(runtime, argv), cwd },
    ["--inspect", "false", ...args],
    { XDG_CONFIG_HOME: tempDir(), ...env },
  );
  agents.push(agent);
  return agent;
}

/** Every "is up" line's name and URL, once `count` of them are printed. */
async function upLines(agent: AgentProcess, count: number): Promise<Record<string, string>> {
  const urls: Record<string, string> = {};
  for (let from = 0; Object.keys(urls).length < count; ) {
    const match = await agent.waitFor(/^tunnel (\S+) is up: (\S+) -> /, { from });
    urls[match[1]!] = match[2]!;
    from = agent.lines.indexOf(match.input, from) + 1;
  }
  return urls;
}

/** An origin that answers every request with `text` and the Host it was sent. */
async function textOrigin(text: string, host = "127.0.0.1"): Promise<number> {
  const server = http.createServer((request, response) => {
    response.setHeader("content-type", "text/plain");
    response.end(`${text} host=${request.headers.host}`);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

describe("the config file and several tunnels", () => {
  it("serves two origins from the two [[tunnel]] tables of burrow.toml, each with its Host mode", async () => {
    const [one, two] = [await textOrigin("one"), await textOrigin("two")];
    const dir = tempDir();
    writeFileSync(
      join(dir, "burrow.toml"),
      [
        `relay = "${relay.url}"`,
        "heartbeat = 5",
        "",
        "[[tunnel]]",
        'name = "cfg-one"',
        `port = ${one}`,
        'host-header = "app.internal.test"',
        "",
        "[[tunnel]]",
        'name = "cfg-two"',
        `origin = "http://127.0.0.1:${two}"`,
        'host-header = "preserve"',
        "",
      ].join("\n"),
    );
    const agent = agentInDir(dir, []);
    const urls = await upLines(agent, 2);
    // Each tunnel's own connection lines name it.
    await agent.waitFor(/^tunnel cfg-one: transport: websocket$/);
    await agent.waitFor(/^tunnel cfg-two: transport: websocket$/);
    // Neither has visitor rules: each says so under its own name.
    expect(agent.lines.filter((line) => line.startsWith("visitors"))).toEqual([
      "visitors of tunnel cfg-one: anyone with the URL",
      "visitors of tunnel cfg-two: anyone with the URL",
    ]);
    const first = await visit(at(urls["cfg-one"]!, "/"));
    expect(first.body.toString()).toBe("one host=app.internal.test");
    const second = await visit(at(urls["cfg-two"]!, "/"));
    expect(second.body.toString()).toBe(`two host=${new URL(urls["cfg-two"]!).host}`);
    expect(await agent.stop("SIGINT")).toBe(0);
    expect(agent.output).toContain("stopped: tunnel cfg-one closed, the name is free");
    expect(agent.output).toContain("stopped: tunnel cfg-two closed, the name is free");
  });

  it("shows every tunnel's requests in the one inspector, and replays each to its own tunnel's origin", async () => {
    const [one, two] = [await textOrigin("one"), await textOrigin("two")];
    const port = await freePort();
    const dir = tempDir();
    writeFileSync(
      join(dir, "burrow.toml"),
      [
        `relay = "${relay.url}"`,
        "[[tunnel]]",
        'name = "seen-one"',
        `port = ${one}`,
        "[[tunnel]]",
        'name = "seen-two"',
        `port = ${two}`,
        "",
      ].join("\n"),
    );
    const agent = agentInDir(dir, ["--inspect", String(port)]);
    const urls = await upLines(agent, 2);
    expect(agent.output).toContain(`inspector: http://127.0.0.1:${port}\n`);
    await visit(at(urls["seen-one"]!, "/a"));
    await visit(at(urls["seen-two"]!, "/b"));
    const b = await entryWhere(port, (e) => e.path === "/b" && e.state === "done");
    const a = await entryWhere(port, (e) => e.path === "/a" && e.state === "done");
    expect([a.tunnel, b.tunnel]).toEqual(["seen-one", "seen-two"]);
    const replayed = await inspector(port, `/api/requests/${b.id}/replay`, { method: "POST", body: {} });
    expect(replayed.status).toBe(202);
    const copy = await entryWhere(port, (e) => e.id === replayed.json.id && e.state === "done");
    expect(copy.tunnel).toBe("seen-two");
    const { json: detail } = await inspector(port, `/api/requests/${copy.id}`);
    expect(detail.response.text).toMatch(/^two host=/);
    expect(await agent.stop("SIGINT")).toBe(0);
  });

  it("lets flags override the file and the file override the environment; paths in the file are relative to it", async () => {
    const port = await textOrigin("origin");
    const dir = tempDir();
    const file = join(dir, "other.toml");
    writeFileSync(file, ['relay = "http://localhost:9"', 'name = "from-file"', `port = ${port}`, ""].join("\n"));
    const fromFile = agentInDir(dir, ["--config", file, "--relay", relay.url], { BURROW_NAME: "from-env" });
    expect(await fromFile.ready()).toContain("from-file");
    // A path in the file is relative to the file, not to where the agent runs.
    mkdirSync(join(dir, "site"));
    writeFileSync(join(dir, "site", "index.html"), "site");
    const sub = tempDir();
    const siteFile = join(sub, "site.toml");
    writeFileSync(siteFile, `relay = "${relay.url}"\n[[tunnel]]\ndir = "../${dir.split("/").at(-1)}/site"\n`);
    const site = agentInDir(tempDir(), ["--config", siteFile]);
    await site.ready();
    expect((await visit(at(site.url, "/"))).body.toString()).toBe("site");
    const fromFlag = agentInDir(dir, ["--config", file, "--relay", relay.url, "--name", "from-flag"], {
      BURROW_NAME: "from-env",
    });
    expect(await fromFlag.ready()).toContain("from-flag");
    expect((await visit(at(fromFlag.url, "/"))).body.toString()).toMatch(/^origin /);
  });

  it.each([
    ['port = 80\nname = "x\n', /^error: burrow\.toml line 2, key name: .+/m],
    ["port = 80\nprot = 81\n", /^error: burrow\.toml line 2, key prot: is not a setting/m],
    ["port = 80\n\nheartbeat = true\n", /^error: burrow\.toml line 3, key heartbeat: must be a number, not true/m],
    ['[[tunnel]]\nport = 80\nrelay = "http://x"\n', /^error: burrow\.toml line 3, key relay: is not a per-tunnel key/m],
    [
      "[[tunnel]]\nport = 80\n[[tunnel]]\nport = 81\nbasic-auth = 5\n",
      /^error: burrow\.toml line 5, key basic-auth: must be a string or a list/m,
    ],
  ])("exits 2 for a bad file, naming the line and the key: %j", async (text, message) => {
    const dir = tempDir();
    writeFileSync(join(dir, "burrow.toml"), text);
    const agent = agentInDir(dir, []);
    expect(await agent.exited).toBe(2);
    expect(agent.output).toMatch(message);
    expect(agent.output).toMatch(/^ {2}hint: /m);
  });

  it.each([
    ["agent PORT", (port: number) => [String(port)]],
    ["agent http PORT", (port: number) => ["http", String(port)]],
    ["agent http HOST:PORT", (port: number) => ["http", `127.0.0.1:${port}`]],
    ["agent http://HOST:PORT", (port: number) => [`http://127.0.0.1:${port}`]],
  ])("serves the shape other tunnels use: %s", async (_, shape) => {
    const port = await textOrigin("shaped");
    const agent = agentInDir(tempDir(), [...shape(port), "--relay", relay.url]);
    await agent.ready();
    expect((await visit(at(agent.url, "/"))).body.toString()).toMatch(/^shaped /);
  });

  it("keeps serving one tunnel when the relay refuses the other's name, and exits 3 only when all are refused", async () => {
    const port = await textOrigin("served");
    const tunnels = (names: string[]) => {
      const dir = tempDir();
      const lines = [`relay = "${relay.url}"`, ...names.flatMap((name) => ["[[tunnel]]", `name = "${name}"`, `port = ${port}`])];
      writeFileSync(join(dir, "burrow.toml"), lines.join("\n"));
      return agentInDir(dir, []);
    };
    await upLines(tunnels(["cfg-held-a", "cfg-held-b"]), 2);

    const some = tunnels(["cfg-held-a", "cfg-free"]);
    const { "cfg-free": url } = await upLines(some, 1);
    await some.waitFor(/^error: tunnel cfg-held-a: the relay refused the tunnel: /);
    expect((await visit(at(url!, "/"))).body.toString()).toMatch(/^served /);
    expect(some.exitCode).toBeNull();

    const all = tunnels(["cfg-held-a", "cfg-held-b"]);
    expect(await all.exited).toBe(3);
    expect(all.output).toMatch(/^error: tunnel cfg-held-b: the relay refused the tunnel: /m);
  });
});

describe.each(["node", "bun", "deno"] as const)("on %s, origins other than plain HTTP on localhost", (runtime) => {
  // `deno task` needs the clone's deno.json in its working directory: paths here are absolute.
  const agentIn = (_cwd: string, args: string[]) => agentInDir(ROOT, args, {}, runtime);
  let certDir: string;
  let httpsPort: number;

  beforeAll(async () => {
    certDir = tempDir();
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256"],
        ...["-keyout", join(certDir, "key.pem"), "-out", join(certDir, "cert.pem"), "-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
      ],
      { stdio: "ignore" },
    );
    const { readFileSync } = await import("node:fs");
    const server = https.createServer(
      { cert: readFileSync(join(certDir, "cert.pem")), key: readFileSync(join(certDir, "key.pem")) },
      (request, response) => response.end(`secure ${request.url} host=${request.headers.host}`),
    );
    // WebSockets: the first message names the handshake's Host, then every message comes back.
    const sockets = new WebSocketServer({ server });
    sockets.on("connection", (ws, request) => {
      ws.send(`host=${request.headers.host}`);
      ws.on("message", (data, binary) => ws.send(data, { binary }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    httpsPort = (server.address() as AddressInfo).port;
    return () => void server.close();
  });

  it("refuses a self-signed https origin without --origin-ca or --origin-insecure, naming both", async () => {
    const agent = agentIn(tempDir(), ["--relay", relay.url, "--origin", `https://localhost:${httpsPort}`]);
    await agent.ready();
    await agent.waitFor(
      /^warning: the local server at https:\/\/localhost:\d+ has a certificate this agent does not trust \(\w+\): pass --origin-ca FILE with its CA, or --origin-insecure/,
    );
    const answer = await visit(at(agent.url, "/x"));
    expect(answer.status).toBe(502);
    expect(answer.body.toString()).toContain("--origin-ca FILE");
  });

  it.each([
    { host: "localhost", flag: "--origin-ca", file: "cert.pem" },
    { host: "127.0.0.1", flag: "--origin-ca", file: "cert.pem" },
    { host: "localhost", flag: "--origin-insecure", file: "" },
  ])("serves a self-signed https origin at $host with $flag", async ({ host, flag, file }) => {
    const args = file ? [flag, join(certDir, file)] : [flag];
    const agent = agentIn(tempDir(), ["--relay", relay.url, "--origin", `https://${host}:${httpsPort}`, ...args]);
    await agent.ready();
    const answer = await visit(at(agent.url, "/page?q=1"));
    expect(answer.status).toBe(200);
    expect(answer.body.toString()).toBe(`secure /page?q=1 host=${host}:${httpsPort}`);
    // No SNI for an address: Node warns about a TLS ServerName that is an IP.
    expect(agent.output).not.toMatch(/Warning/);
  });

  it("carries a visitor's WebSocket to a wss:// origin, with the public Host under preserve", async () => {
    const agent = agentIn(tempDir(), [
      ...["--relay", relay.url, "--origin", `https://localhost:${httpsPort}`],
      ...["--origin-ca", join(certDir, "cert.pem"), "--host-header", "preserve"],
    ]);
    await agent.ready();
    const target = new URL(agent.url.replace(/^http/, "ws"));
    const host = target.host;
    target.hostname = "127.0.0.1";
    const ws = new WebSocket(target.href, { headers: { host } });
    const messages: string[] = [];
    const two = new Promise<void>((resolve, reject) => {
      ws.on("message", (data) => messages.push(data.toString()) === 2 && resolve());
      ws.on("error", reject);
    });
    ws.on("open", () => ws.send("hello"));
    await two;
    ws.close();
    expect(messages).toEqual([`host=${host}`, "hello"]);
  });

  it("serves an origin on another host of the agent's network (127.0.0.2 is another address)", async () => {
    const port = await textOrigin("elsewhere", "127.0.0.2");
    const agent = agentIn(tempDir(), ["--relay", relay.url, "--origin", `http://127.0.0.2:${port}`]);
    await agent.ready();
    expect(agent.lines.join("\n")).toContain(`-> http://127.0.0.2:${port}`);
    expect((await visit(at(agent.url, "/"))).body.toString()).toBe(`elsewhere host=127.0.0.2:${port}`);
  });

  it("serves a directory: files by type, index.html, 404, and never a path out of it", async () => {
    const dir = tempDir();
    const site = join(dir, "public");
    mkdirSync(join(site, "docs"), { recursive: true });
    writeFileSync(join(site, "index.html"), "<h1>home</h1>");
    writeFileSync(join(site, "docs", "index.html"), "<h1>docs</h1>");
    writeFileSync(join(site, "app.css"), "body{}");
    writeFileSync(join(dir, "secret.txt"), "secret");
    symlinkSync(join(dir, "secret.txt"), join(site, "link.txt"));
    const agent = agentIn(dir, ["--relay", relay.url, "--dir", site]);
    await agent.ready();
    const home = await visit(at(agent.url, "/"));
    expect([home.status, home.headers["content-type"], home.body.toString()]).toEqual([
      200,
      "text/html; charset=utf-8",
      "<h1>home</h1>",
    ]);
    const css = await visit(at(agent.url, "/app.css"));
    expect([css.status, css.headers["content-type"]]).toEqual([200, "text/css; charset=utf-8"]);
    expect((await visit(at(agent.url, "/docs/"))).body.toString()).toBe("<h1>docs</h1>");
    expect((await visit(at(agent.url, "/docs"))).status).toBe(301);
    expect((await visit(at(agent.url, "/missing.txt"))).status).toBe(404);
    expect((await visit(at(agent.url, "/docs/..%2f..%2fsecret.txt"))).status).toBe(403);
    expect((await visit(at(agent.url, "/%2e%2e%2fsecret.txt"))).status).toBe(403);
    expect((await visit(at(agent.url, "/link.txt"))).status).toBe(403);
    expect((await visit(at(agent.url, "/app.css"), { method: "POST", body: new Uint8Array(1) })).status).toBe(405);
  });
});

// The one-origin promise, checked on the real _origin.ts too: its /echo sees only the origin's host.
describe("--host-header with the test origin", () => {
  it("sends the public host with preserve and the origin's own with rewrite", async () => {
    const origin = await Origin.start();
    servers.push(origin);
    const preserve = agentInDir(tempDir(), ["--relay", relay.url, "--port", String(origin.port), "--host-header", "preserve"]);
    await preserve.ready();
    const echoed = JSON.parse((await visit(at(preserve.url, "/echo"))).body.toString());
    expect(echoed.headers.host).toBe(new URL(preserve.url).host);
    const rewrite = agentInDir(tempDir(), ["--relay", relay.url, "--port", String(origin.port)]);
    await rewrite.ready();
    expect(JSON.parse((await visit(at(rewrite.url, "/echo"))).body.toString()).headers.host).toBe(`localhost:${origin.port}`);
  });
});
