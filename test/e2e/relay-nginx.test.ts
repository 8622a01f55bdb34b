// The self-hosted relay behind Debian's nginx, configured with the file docs/relay-selfhosted.md
// shows (read from the page, so that the page cannot rot): TLS at nginx with a certificate made
// here, agents on both transports and visitors' WebSockets through it, streamed uploads, long
// polls outliving a quiet spell, the visitor's address from X-Forwarded-For only with
// --trust-proxy, the public host and scheme as the origin sees them, and `agent doctor`.
// Visitors come from 127.0.0.5 (Linux answers all of 127/8 on loopback), nginx from 127.0.0.1.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Child, freePort } from "../_process.ts";
import { Relay } from "../_relay.ts";
import { codeBlocks } from "../docs/_markdown.ts";

const PAGE = "docs/relay-selfhosted.md";
const VISITOR = "127.0.0.5";
const OTHER_VISITOR = "127.0.0.6";
const NAMES = ["sub", "path", "poll", "rule", "untrusted", "flow"];

function nginxAvailable(): boolean {
  try {
    execFileSync("nginx", ["-v"], { stdio: "ignore" });
    return true;
  } catch {
    const message = "\n!!! SKIPPING the relay behind nginx: nginx is not installed (apt-get install nginx)\n";
    if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
    console.warn(message);
    return false;
  }
}

/** The page's nginx file with this test's ports, names and certificate in place of its examples. */
function siteConfig(text: string, to: { port: number; relayPort: number; cert: string; key: string }): string {
  const swaps: [string | RegExp, string][] = [
    ["listen 443 ssl;", `listen 127.0.0.1:${to.port} ssl;`],
    ["server 127.0.0.1:8080;", `server 127.0.0.1:${to.relayPort};`],
    ["/etc/letsencrypt/live/tunnels.example.com/fullchain.pem", to.cert],
    ["/etc/letsencrypt/live/tunnels.example.com/privkey.pem", to.key],
    [/tunnels\.example\.com/g, "localhost"],
  ];
  for (const [from, into] of swaps) {
    if (!(typeof from === "string" ? text.includes(from) : from.test(text))) {
      throw new Error(`${PAGE}'s nginx file no longer says ${from}: update this test with the page`);
    }
    text = text.replaceAll(from, into);
  }
  return text;
}

class Nginx {
  private constructor(
    readonly port: number,
    private readonly child: Child,
    private readonly dir: string,
  ) {}

  static async start(site: string, dir: string, port: number): Promise<Nginx> {
    mkdirSync(join(dir, "logs"), { recursive: true });
    // The page's file goes where Debian's nginx.conf includes sites-enabled/*: inside http {}.
    writeFileSync(join(dir, "site.conf"), site);
    writeFileSync(
      join(dir, "nginx.conf"),
      [
        "user root;",
        "worker_processes 1;",
        `pid ${dir}/nginx.pid;`,
        "error_log stderr warn;",
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((kind) => `  ${kind}_temp_path ${dir}/${kind};`),
        `  include ${dir}/site.conf;`,
        "}",
        "",
      ].join("\n"),
    );
    const child = new Child("nginx", "nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"]);
    const nginx = new Nginx(port, child, dir);
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) break;
      try {
        await new Promise<void>((resolve, reject) => {
          const socket = net.connect(port, "127.0.0.1", () => {
            socket.end();
            resolve();
          });
          socket.on("error", reject);
        });
        return nginx;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    throw new Error(`nginx did not start:\n${child.output}`);
  }

  async stop(): Promise<void> {
    await this.child.stop("SIGQUIT");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An HTTPS request to `url` through nginx, dialing 127.0.0.1 from `from` with the URL's Host. */
function visitTls(
  url: string,
  ca: Buffer,
  options: { from?: string; method?: string; headers?: Record<string, string>; body?: Uint8Array } = {},
): Promise<Answer> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const request = https.request(
      {
        host: "127.0.0.1",
        port: target.port,
        servername: target.hostname,
        localAddress: options.from ?? VISITOR,
        path: target.pathname + target.search,
        method: options.method ?? "GET",
        headers: { host: target.host, ...options.headers },
        ca: [ca],
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) }),
        );
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(options.body);
  });
}

const echoed = (answer: Answer) => JSON.parse(answer.body.toString()) as { headers: Record<string, string>; length: number };

describe.skipIf(!nginxAvailable())("the self-hosted relay behind nginx, with the docs' configuration", () => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-relay-nginx-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  let ca: Buffer;
  let origin: Origin;
  const relays: Relay[] = [];
  const proxies: Nginx[] = [];
  const agents: AgentProcess[] = [];
  const block = codeBlocks(PAGE).find((each) => each.lang === "nginx");

  /** A relay with `args`, and nginx in front of it with the page's file; resolves with nginx's public URL. */
  async function relayBehindNginx(args: string[], vars: Record<string, string> = {}): Promise<string> {
    const relay = await Relay.start({ launcher: "selfhost-node", vars, args });
    relays.push(relay);
    const port = await freePort();
    const site = siteConfig(block!.text, { port, relayPort: relay.port, cert, key });
    proxies.push(await Nginx.start(site, mkdtempSync(join(dir, "nginx-")), port));
    return `https://localhost:${port}`;
  }

  async function agent(relayUrl: string, name: string, ...more: string[]): Promise<AgentProcess> {
    const started = await AgentProcess.start("node", [
      ...["--relay", relayUrl, "--ca", cert, "--port", String(origin.port), "--name", name, "--inspect", "false", ...more],
    ]);
    agents.push(started);
    return started;
  }

  beforeAll(async () => {
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"],
        // Node refuses a wildcard of one label (*.localhost): each tunnel's name is listed.
        ...[
          "-addext",
          `subjectAltName=${["localhost", ...NAMES.map((name) => `${name}.localhost`)].map((n) => `DNS:${n}`).join(",")}`,
        ],
        ...["-addext", "basicConstraints=critical,CA:TRUE", "-keyout", key, "-out", cert],
      ],
      { stdio: "ignore" },
    );
    ca = readFileSync(cert);
    origin = await Origin.start();
  }, 30_000);

  afterAll(async () => {
    await Promise.all(agents.map((each) => each.stop("SIGKILL")));
    await Promise.all(proxies.map((each) => each.stop()));
    await Promise.all(relays.map((each) => each.dispose()));
    await origin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("finds the nginx file in the page", () => {
    expect(block, `${PAGE} has no nginx code block`).toBeDefined();
  });

  describe("with --base-domain and --trust-proxy naming nginx", () => {
    let url = "";
    beforeAll(async () => {
      url = await relayBehindNginx(["--trust-proxy", "127.0.0.1"], { BASE_DOMAIN: "localhost" });
    }, 60_000);

    it("serves a subdomain tunnel over TLS, the origin told the public host and scheme and the visitor's address", async () => {
      const sub = await agent(url, "sub");
      expect(sub.url).toBe(`https://sub.${new URL(url).host}`);
      const answer = await visitTls(`${sub.url}/echo`, ca, { headers: { "x-forwarded-for": "6.6.6.6" } });
      expect(answer.status).toBe(200);
      const { headers } = echoed(answer);
      expect(headers["x-forwarded-host"]).toBe(new URL(sub.url).host);
      expect(headers["x-forwarded-proto"]).toBe("https");
      expect(headers["x-real-ip"]).toBe(VISITOR);
      expect(headers["x-forwarded-for"]).toBe(`6.6.6.6, ${VISITOR}`);
    });

    it("serves the path form on the base host, with the public host as the origin's", async () => {
      const path = await agent(url, "path", "--host-header", "preserve");
      const answer = await visitTls(`${url}/t/path/echo`, ca);
      expect(answer.status).toBe(200);
      const { headers } = echoed(answer);
      expect(headers.host).toBe(new URL(url).host);
      expect(headers["x-forwarded-host"]).toBe(new URL(url).host);
      expect(headers["x-forwarded-proto"]).toBe("https");
      path.signal("SIGINT");
      expect(await path.exited).toBe(0);
    });

    it("streams a large upload and download both ways, and carries a visitor's WebSocket", async () => {
      const flow = await agent(url, "flow");
      const body = Buffer.alloc(8_000_000, 7);
      const up = await visitTls(`${flow.url}/echo`, ca, { method: "POST", body });
      expect(up.status).toBe(200);
      expect(echoed(up).length).toBe(body.length);
      const down = await visitTls(`${flow.url}/bytes/3000000`, ca);
      expect(down.body.length).toBe(3_000_000);
      const target = new URL(`${flow.url}/ws/echo`);
      // ws hands its options to https.request: the name to check the certificate against, too.
      const options = { headers: { host: target.host }, servername: target.hostname, localAddress: VISITOR, ca: [ca] };
      const ws = new WebSocket(`wss://127.0.0.1:${target.port}/ws/echo`, options);
      await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
      const message = new Promise<string>((resolve) => ws.once("message", (data: Buffer) => resolve(data.toString())));
      ws.send("through nginx");
      expect(await message).toBe("through nginx");
      ws.close();
    });

    it("keeps an HTTPS-transport agent's tunnel answering across a quiet spell longer than a poll", async () => {
      const poll = await agent(url, "poll", "--transport", "https");
      expect((await visitTls(`${poll.url}/echo`, ca)).status).toBe(200);
      // The relay holds a poll 25 s when it has nothing to send: nginx must neither cut nor buffer it.
      await new Promise((resolve) => setTimeout(resolve, 27_000));
      const answer = await visitTls(`${poll.url}/echo`, ca, { method: "POST", body: Buffer.alloc(2_000_000, 1) });
      expect(answer.status).toBe(200);
      expect(echoed(answer).length).toBe(2_000_000);
      expect(poll.output).not.toMatch(/reconnecting/);
    }, 60_000);

    it("lets an --allow-ip rule see the real visitor, whatever X-Forwarded-For the visitor sends", async () => {
      const rule = await agent(url, "rule", "--allow-ip", VISITOR);
      expect((await visitTls(`${rule.url}/echo`, ca, { from: VISITOR })).status).toBe(200);
      const other = await visitTls(`${rule.url}/echo`, ca, { from: OTHER_VISITOR, headers: { "x-forwarded-for": VISITOR } });
      expect(other.status).toBe(403);
    });

    it("passes agent doctor's checks on both transports", async () => {
      const doctor = new AgentProcess("node", ["doctor", "--relay", url, "--ca", cert]);
      const status = await doctor.exited;
      expect(status, doctor.output).toBe(0);
      for (const step of ["relay", "tls", "websocket", "https", "token"])
        expect(doctor.output).toMatch(new RegExp(`^ok +${step} `, "m"));
      expect(doctor.output).toMatch(/^verdict: the agent will use the WebSocket transport$/m);
    });
  });

  describe("without --trust-proxy", () => {
    let url = "";
    beforeAll(async () => {
      url = await relayBehindNginx([], { BASE_DOMAIN: "localhost" });
    }, 60_000);

    it("sees every visitor at nginx's address, and ignores X-Forwarded-For", async () => {
      const untrusted = await agent(url, "untrusted", "--allow-ip", VISITOR);
      const refused = await visitTls(`${untrusted.url.replace(/^http:/, "https:")}/echo`, ca, {
        headers: { "x-forwarded-for": VISITOR },
      });
      expect(refused.status).toBe(403);
      // With the rule on nginx's own address, everyone is let in: the relay sees only nginx.
      const nginxOnly = await agent(url, "flow", "--allow-ip", "127.0.0.1");
      const through = await visitTls(`${nginxOnly.url.replace(/^http:/, "https:")}/echo`, ca, { from: OTHER_VISITOR });
      expect(through.status).toBe(200);
      expect(echoed(through).headers["x-real-ip"]).toBe("127.0.0.1");
    });
  });

  describe("the path form, with --public-url", () => {
    let url = "";
    beforeAll(async () => {
      const port = await freePort();
      url = `https://localhost:${port}`;
      const relay = await Relay.start({
        launcher: "selfhost-node",
        vars: { BASE_DOMAIN: "" },
        args: ["--trust-proxy", "127.0.0.1", "--public-url", url],
      });
      relays.push(relay);
      const site = siteConfig(block!.text, { port, relayPort: relay.port, cert, key });
      proxies.push(await Nginx.start(site, mkdtempSync(join(dir, "nginx-")), port));
    }, 60_000);

    it("gives agents the public URL, and the origin the public host, whatever Host a visitor sends", async () => {
      const path = await agent(url, "path", "--host-header", "preserve");
      expect(path.url).toBe(`${url}/t/path/`);
      const answer = await visitTls(`${url}/t/path/echo`, ca, { headers: { host: "evil.example" } });
      expect(answer.status).toBe(200);
      const { headers } = echoed(answer);
      expect(headers.host).toBe(new URL(url).host);
      expect(headers["x-forwarded-host"]).toBe(new URL(url).host);
      expect(headers["x-forwarded-proto"]).toBe("https");
      expect(headers["x-real-ip"]).toBe(VISITOR);
    });
  });
});
