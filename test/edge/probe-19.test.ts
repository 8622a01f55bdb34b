import net from "node:net";
import { FrameType } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

// Issue 19's rerun: the attack classes of its probe with inputs the fixes' own tests did not
// use (test/edge/base-domain.test.ts has those), against a relay on a real base domain.

const BASE = "tunnel.example.test";
const TUNNEL_HOST = `demo.${BASE}`;

/**
 * Sends `head` (a request head without its blank line) on a socket of its own and returns the
 * status line and the body, for what Node's client will not send (obs-fold, raw bytes in Host).
 */
function raw(port: number, head: string): Promise<{ status: string; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const done = () => {
      const text = Buffer.concat(chunks).toString("utf8");
      resolve({ status: text.split("\r\n", 1)[0]!, text });
      socket.destroy();
    };
    socket.on("data", (chunk) => {
      chunks.push(chunk);
      // A whole response (workerd may keep the connection open despite Connection: close).
      const bytes = Buffer.concat(chunks);
      const end = bytes.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: *(\d+)/i.exec(bytes.subarray(0, end).toString("latin1"))?.[1];
      if (end >= 0 && length !== undefined && bytes.length >= end + 4 + Number(length)) done();
    });
    socket.on("error", reject);
    socket.on("close", done);
    socket.write(Buffer.from(`${head}\r\nconnection: close\r\n\r\n`, "utf8"));
  });
}

describe("issue 19 rerun on a relay with a base domain", () => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ vars: { BASE_DOMAIN: BASE } }), Origin.start()]);
    origin.route("/cookies", (request, response) => {
      response.setHeader("set-cookie", JSON.parse(String(request.headers["x-cookies"])) as string[]);
      response.end("set");
    });
    agent = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "demo"), "--host-header", "preserve"]);
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  async function cookiesSeen(host: string, path: string, cookies: string[]): Promise<string[]> {
    const response = await visit(`http://${host}:${relay.port}${path}`, { headers: { "x-cookies": JSON.stringify(cookies) } });
    expect(response.status).toBe(200);
    return response.headers["set-cookie"] ?? [];
  }

  async function echoed(host: string, path: string, headers: Record<string, string> = {}) {
    const response = await visit(`http://${host}:${relay.port}${path}`, { headers });
    expect(response.status).toBe(200);
    return JSON.parse(response.body.toString()).headers as Record<string, string>;
  }

  it("drops a Domain with a trailing dot, quotes, percent-encoding, an empty value or none, in any case", async () => {
    const seen = await cookiesSeen(TUNNEL_HOST, "/cookies", [
      `a=1; Domain=${BASE}.`,
      `b=1; Domain=.${BASE.toUpperCase()}.`,
      `c=1; Domain="${BASE}"`,
      `d=1; Domain=%74unnel.example.test`,
      "e=1; Domain=",
      "f=1; Domain",
      `g=1; DOMAIN=${TUNNEL_HOST}.`,
      `h=1; Domain=${TUNNEL_HOST}; Domain=`,
      `i=1; Domain=${TUNNEL_HOST}:${relay.port}`,
      `j=1, k=2; Domain=${BASE}`,
      `l=1; Path=/; Domain=${BASE}; Domain=${BASE}; Domain=${BASE}`,
    ]);
    expect(seen).toEqual([
      "a=1",
      "b=1",
      "c=1",
      "d=1",
      "e=1",
      "f=1",
      "g=1",
      // RFC 6265 5.2.3: an empty Domain is ignored, so the browser keeps the one before it.
      `h=1; Domain=${TUNNEL_HOST}`,
      "i=1",
      "j=1, k=2",
      "l=1; Path=/",
    ]);
  });

  it("drops a Domain on the path form whatever Host the visitor sent", async () => {
    for (const host of [BASE, `${BASE.toUpperCase()}`, "127.0.0.1", "[::1]"]) {
      const seen = await cookiesSeen(host, "/t/demo/cookies", [`a=1; Domain=${BASE}.`, "b=1; Domain=127.0.0.1"]);
      expect(seen.filter((c) => !c.startsWith("burrow_tunnel="))).toEqual(["a=1; Path=/t/demo/", "b=1; Path=/t/demo/"]);
    }
  });

  it("narrows a Domain on a WebSocket's 101 too, on both forms", async () => {
    const agent = await RawAgent.hello(relay, "sockets");
    const cookies = async (host: string, path: string) => {
      const socket = new WebSocket(`ws://127.0.0.1:${relay.port}${path}`, { headers: { host: `${host}:${relay.port}` } });
      const upgraded = new Promise<string[]>((resolve, reject) => {
        socket.once("upgrade", (response) => resolve(response.headers["set-cookie"] ?? []));
        socket.once("error", reject);
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({
        type: FrameType.ResponseHead,
        stream: head.stream,
        status: 101,
        headers: [
          ["set-cookie", `a=1; Domain=${BASE}; Path=/`],
          ["Set-Cookie", `b=1; domain=.${BASE.toUpperCase()}.`],
        ],
      });
      const seen = await upgraded;
      socket.close(1000);
      return seen.filter((cookie) => !cookie.startsWith("burrow_tunnel="));
    };
    // The relay's 101 carries none of the origin's fields but its subprotocol (today), or
    // the cookies narrowed: never a Domain wider than the tunnel's host.
    const sub = await cookies(`sockets.${BASE}`, "/ws");
    const path = await cookies(BASE, "/t/sockets/ws");
    for (const cookie of [...sub, ...path]) expect(cookie).not.toMatch(/domain/i);
    agent.socket.close(1000);
  });

  it("drops client-address fields sent twice, with _ for -, or folded onto two lines", async () => {
    const seen = await echoed(TUNNEL_HOST, "/echo", { x_forwarded_for: "6.6.6.6", true_client_ip: "6.6.6.6" });
    expect(JSON.stringify(seen)).not.toContain("6.6.6.6");
    const twice = await raw(
      relay.port,
      `GET /echo HTTP/1.1\r\nhost: ${TUNNEL_HOST}\r\nTrue-Client-IP: 6.6.6.6\r\ntrue-client-ip: 7.7.7.7\r\nX-Real-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7`,
    );
    expect(twice.status).toBe("HTTP/1.1 200 OK");
    expect(twice.text).not.toMatch(/6\.6\.6\.6|7\.7\.7\.7/);
    // obs-fold (RFC 9112 section 5.2): a server either refuses it or joins the lines; the
    // field's value never reaches the origin under a name the relay did not check.
    const folded = await raw(relay.port, `GET /echo HTTP/1.1\r\nhost: ${TUNNEL_HOST}\r\nX-Other: a\r\n True-Client-IP: 6.6.6.6`);
    if (folded.status === "HTTP/1.1 200 OK") {
      const headers = JSON.parse(folded.text.slice(folded.text.indexOf("\r\n\r\n") + 4)).headers as Record<string, string>;
      expect(headers["true-client-ip"]).toBeUndefined();
    } else expect(folded.status).toMatch(/^HTTP\/1\.1 400/);
  });

  it("drops fields that tell the origin another URL or host (X-Original-URL, X-Rewrite-URL, X-Host...)", async () => {
    const fields = {
      "x-original-url": "/admin",
      "x-rewrite-url": "/admin",
      "x-original-host": "evil.example",
      "x-host": "evil.example",
      "x-http-host-override": "evil.example",
      "x-forwarded-server": "evil.example",
      x_original_url: "/admin",
      "X-Original-Uri": "/admin",
    };
    for (const path of ["/echo", "/t/demo/echo"]) {
      const seen = await echoed(path.startsWith("/t/") ? BASE : TUNNEL_HOST, path, fields);
      for (const name of Object.keys(fields)) expect(seen[name.toLowerCase()], name).toBeUndefined();
    }
  });

  it("tells the origin only the host it recognised, whatever the case, port or form of the Host sent", async () => {
    const port = relay.port;
    const told = async (host: string, path: string) => {
      const seen = await echoed(host, path);
      return [seen.host, seen["x-forwarded-host"]];
    };
    expect(await told(TUNNEL_HOST.toUpperCase(), "/echo")).toEqual([`${TUNNEL_HOST}:${port}`, `${TUNNEL_HOST}:${port}`]);
    // Hosts that are not a tunnel's subdomain (DEMO.<BASE> is: the URL parser lowercases it).
    for (const host of [`${BASE}.`, `${BASE.toUpperCase()}`, "[::1]", "[::ffff:127.0.0.1]", `${TUNNEL_HOST}.`, "evil.example."]) {
      expect(await told(host, "/t/demo/echo"), host).toEqual([`${BASE}:${port}`, `${BASE}:${port}`]);
    }
    // A Host naming the tunnel with a trailing dot is not the tunnel's subdomain: the relay's
    // own routes answer, and no origin is reached.
    const dotted = await visit(`http://${TUNNEL_HOST}.:${port}/echo`);
    expect(dotted.status).toBe(404);
    expect(dotted.body.toString()).not.toContain('"x-forwarded-host"');
    // A Host without a port (the default one): the origin hears the same host.
    const bare = await raw(port, `GET /echo HTTP/1.1\r\nhost: ${TUNNEL_HOST}`);
    const headers = JSON.parse(bare.text.slice(bare.text.indexOf("\r\n\r\n") + 4)).headers as Record<string, string>;
    expect([headers.host, headers["x-forwarded-host"]]).toEqual([TUNNEL_HOST, TUNNEL_HOST]);
  });

  it("refuses punycode names in any case, encoding and place", async () => {
    // The connect URL in capitals is refused at the upgrade; a hello in capitals on a
    // lowercase URL is refused for naming another tunnel than its URL.
    for (const name of ["XN--80ak6aa92e", "Xn--pple-43d", "xN--demo"]) {
      await expect(RawAgent.open(relay, name)).rejects.toThrow(/400/);
      const agent = await RawAgent.open(relay, name.toLowerCase());
      agent.send(RawAgent.helloFrame(name));
      expect(await agent.next()).toMatchObject({ type: FrameType.Refused });
      const [, lower] = await RawAgent.say(relay, name.toLowerCase());
      expect(lower).toMatchObject({ type: FrameType.Refused, code: "name-reserved" });
    }
    for (const path of ["/t/XN--80ak6aa92e/", "/t/%78n--80ak6aa92e/", "/t/%58N--80ak6aa92e/x"]) {
      // 400 for capitals (no name has them), 404 for the punycode name itself.
      const response = await visit(`http://${BASE}:${relay.port}${path}`);
      expect([400, 404], path).toContain(response.status);
      expect(response.headers["x-burrow-error"], path).toBeDefined();
    }
    const upper = await visit(`http://XN--80AK6AA92E.${BASE}:${relay.port}/`);
    expect(upper.status).toBe(404);
    expect(upper.body.toString()).toContain("xn--");
    // A Unicode label as UTF-8 in the Host: workerd answers 500 before the Worker runs ("invalid
    // hostname when stringifying URL"), so no tunnel is reached, and the tunnel still serves.
    const unicode = await raw(relay.port, `GET / HTTP/1.1\r\nhost: пример.${BASE}`);
    expect(unicode.status).not.toMatch(/^HTTP\/1\.1 [23]/);
    expect((await visit(`http://${TUNNEL_HOST}:${relay.port}/echo`)).status).toBe(200);
  });

  it("refuses a shard's hello that names the URL's tunnel in another case", async () => {
    const shard = await RawAgent.open(relay, "demo&shard=1");
    shard.send(RawAgent.helloFrame("Demo"));
    expect(await shard.next()).toMatchObject({ type: FrameType.Refused });
    const first = await RawAgent.open(relay, "demo");
    first.send(RawAgent.helloFrame("DEMO"));
    expect(await first.next()).toMatchObject({ type: FrameType.Refused });
    // The real agent still serves the tunnel.
    expect((await visit(`http://${TUNNEL_HOST}:${relay.port}/echo`)).status).toBe(200);
  });
});
