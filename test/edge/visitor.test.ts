import http from "node:http";
import net from "node:net";
import { gunzipSync, gzipSync } from "node:zlib";
import { CONNECT_PATH, MAX_HEADER_BYTES, SESSION_PATH } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkVisitorRequest } from "../../edge/src/core/visitor.ts";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { Origin } from "../_origin.ts";
import { RELAY_FORMS, Relay } from "../_relay.ts";
import { download } from "../_transfer.ts";
import { at, type Visit, visit } from "../_visit.ts";

/** Sends `head` (request line and fields, CRLFs included) as raw bytes; resolves with the status line. */
function rawRequest(port: number, head: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.end(head));
    let answer = "";
    socket.on("data", (chunk) => {
      answer += chunk.toString("latin1");
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(answer));
  });
}

function page(response: Visit): string {
  return response.body.toString();
}

describe("checkVisitorRequest", () => {
  const ok = { method: "GET", path: "/", headers: [] as [string, string][] };
  it.each([
    ["a method over 64 characters", { ...ok, method: "A".repeat(65) }, 400, /HTTP token of at most 64/],
    ["a method that is not a token", { ...ok, method: "GE T" }, 400, /HTTP token/],
    ["a path that does not start with /", { ...ok, path: "urrow/connect" }, 400, /must start with \//],
    ["a path with a space", { ...ok, path: "/a b" }, 400, /no spaces/],
    ["a header name that is not a token", { ...ok, headers: [["bad name", "x"]] }, 400, /not an HTTP token/],
    ["a header value with a LF", { ...ok, headers: [["x-a", "1\n2"]] }, 400, /"x-a" holds the character U\+000A at 1/],
    ["a header value above U+00FF", { ...ok, headers: [["x-a", "\u0100"]] }, 400, /U\+0100/],
  ] as const)("refuses %s with 400", (_, head, status, message) => {
    expect(() => checkVisitorRequest(head as never, 65536)).toThrow(
      expect.objectContaining({ status, message: expect.stringMatching(message) }),
    );
  });

  it("accepts obs-text (0x80-0xFF) and tabs in values, as the codec does", () => {
    expect(() => checkVisitorRequest({ ...ok, headers: [["x-a", "caf\u00e9\tb"]] }, 65536)).not.toThrow();
  });

  it("counts the head in UTF-8 bytes, as the frame carries it", () => {
    const head = { ...ok, headers: [["x-a", "\u00e9".repeat(20_000)] as [string, string]] };
    expect(() => checkVisitorRequest(head, 30_000)).toThrow(
      expect.objectContaining({ status: 431, message: expect.stringMatching(/40\d\d\d bytes/) }),
    );
  });
});

describe.each(RELAY_FORMS)("visitor requests on %s", (launcher) => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;
  let base: string;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher }), Origin.start()]);
    agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "demo"));
    base = `http://localhost:${relay.port}`;
    origin.route("/set-cookies", (_, response) => {
      response.setHeader("set-cookie", [
        "sid=1; Path=/; Domain=localhost; HttpOnly",
        "a=2",
        "b=3; path=/x; Secure; SameSite=Lax",
      ]);
      response.setHeader("content-encoding", "gzip");
      response.end(gzipSync("cookies set"));
    });
    origin.route("/fake-error", (_, response) => {
      response.writeHead(502, { "x-burrow-error": "agent-offline" });
      response.end("the origin's own 502");
    });
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  describe("requests the agent would refuse", () => {
    const big = "a".repeat(MAX_HEADER_BYTES + 100);
    const many = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`x-h${i}`, "1"]));
    const triggers: [string, () => Promise<Visit>, number, string, RegExp][] = [
      [
        "a header over 32 KiB",
        () => visit(`http://demo.localhost:${relay.port}/never`, { headers: { "x-big": big } }),
        431,
        "request-header-too-large",
        /The header "x-big" is 32873 bytes; the limit is 32768/,
      ],
      [
        "300 header fields",
        () => visit(`http://demo.localhost:${relay.port}/never`, { headers: many }),
        431,
        "request-header-too-large",
        /has 30\d header fields \(with the relay's X-Forwarded-\*\); the limit is 256/,
      ],
      [
        "a head over MAX_REQUEST_HEAD_BYTES",
        () =>
          visit(`http://demo.localhost:${relay.port}/never`, {
            headers: { "x-a": "a".repeat(30_000), "x-b": "b".repeat(30_000), "x-c": "c".repeat(30_000) },
          }),
        431,
        "request-header-too-large",
        /The request's head is 90\d\d\d bytes \(\d+ header fields\); the limit is 65536 \(MAX_REQUEST_HEAD_BYTES\)/,
      ],
      [
        // Under the protocol's limits, but over workerd's own for the Worker -> Durable Object hop.
        "a 20000-byte header on the path form",
        () => visit(`${base}/t/demo/never`, { headers: { "x-mid": "m".repeat(20_000) } }),
        431,
        "request-header-too-large",
        /too large for the relay to hand to the tunnel/,
      ],
      [
        "a path over 32 KiB",
        () => visit(`${base}/t/demo/never/${"p".repeat(MAX_HEADER_BYTES)}`),
        414,
        "uri-too-long",
        /The path and query are 3\d+ bytes; the limit is 32768/,
      ],
      [
        "a query over 32 KiB",
        () => visit(`http://demo.localhost:${relay.port}/never?${"q".repeat(MAX_HEADER_BYTES)}`),
        414,
        "uri-too-long",
        /the limit is 32768/,
      ],
    ];

    it.each(triggers)("answers %s itself, and the tunnel's other downloads go on", async (_, send, status, code, message) => {
      const seen = origin.requests.length;
      const lines = agent.lines.length;
      const size = 16 * 1024 * 1024;
      // A visitor reading at 8 MB/s: the download spans the bad request.
      const long = download(at(agent.url, `/pattern/${size}`), 8 * 1024 * 1024);
      await new Promise((resolve) => setTimeout(resolve, 300)); // let it start: the request must overlap
      const response = await send();
      expect(response.status).toBe(status);
      expect(response.headers["x-burrow-error"]).toBe(code);
      expect(response.headers["x-content-type-options"]).toBe("nosniff");
      expect(page(response)).toMatch(message);
      const done = await long;
      expect(done).toMatchObject({ status: 200, length: size, sha256: patternHash(size) });
      expect(origin.requests.slice(seen).map((r) => r.url)).toEqual([`/pattern/${size}`]);
      expect(agent.lines.slice(lines).join("\n")).not.toMatch(/connection lost|malformed/);
    });

    it("redirects a percent-encoded tunnel name to the canonical one", async () => {
      const response = await visit(`${base}/t/%64emo/echo/a?q=1`);
      expect(response.status).toBe(308);
      expect(response.headers.location).toBe("/t/demo/echo/a?q=1");
      const followed = await visit(`${base}${response.headers.location}`);
      expect(JSON.parse(page(followed)).url).toBe("/echo/a?q=1");
    });

    it("answers a method, name or value the codec would refuse, without the agent reconnecting", async () => {
      const lines = agent.lines.length;
      const host = `demo.localhost:${relay.port}`;
      const answers = await Promise.all(
        [
          `${"M".repeat(70)} /never HTTP/1.1\r\nhost: ${host}\r\n\r\n`,
          `GET /never HTTP/1.1\r\nhost: ${host}\r\nx-bin: caf\xe9 \xff\r\nconnection: close\r\n\r\n`,
          `GET /never HTTP/1.1\r\nhost: ${host}\r\nx-ctl: a\x01b\r\nconnection: close\r\n\r\n`,
          `GET /never HTTP/1.1\r\nhost: ${host}\r\nbad(name): 1\r\nconnection: close\r\n\r\n`,
        ].map((head) => rawRequest(relay.port, Buffer.from(head, "latin1"))),
      );
      if (relay.host === "cloudflare") {
        // workerd itself refuses methods it does not know (501) and field names that are not tokens
        // (400), but hands the Worker control characters, and bytes 0x80-0xFF decoded as UTF-8
        // (U+FFFD where they are not): both would fail the codec's FIELD_VALUE.
        expect(answers[0]).toMatch(/^HTTP\/1\.1 501 /);
        expect(answers[1]).toMatch(/^HTTP\/1\.1 400 [\s\S]*400 bad-request[\s\S]*"x-bin" holds the character U\+FFFD at 3/);
        expect(answers[2]).toMatch(/^HTTP\/1\.1 400 [\s\S]*400 bad-request[\s\S]*"x-ctl" holds the character U\+0001 at 1/);
        expect(answers[3]).toMatch(/^HTTP\/1\.1 400 /);
        expect(origin.requests.filter((r) => r.url === "/never")).toEqual([]);
      } else {
        // Node's parser (llhttp) refuses itself, with 400, a method it does not know, a control
        // character and a field name that is not a token; it hands the relay bytes 0x80-0xFF as
        // Latin-1 (RFC 9110 5.5 obs-text), which the codec carries: the origin gets them as sent.
        expect(answers[0]).toMatch(/^HTTP\/1\.1 400 /);
        expect(answers[2]).toMatch(/^HTTP\/1\.1 400 /);
        expect(answers[3]).toMatch(/^HTTP\/1\.1 400 /);
        const never = origin.requests.filter((r) => r.url === "/never");
        expect(never.map((r) => Buffer.from(r.headers["x-bin"] as string, "latin1"))).toEqual([
          Buffer.from("caf\xe9 \xff", "latin1"),
        ]);
      }
      expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
      expect(agent.lines.slice(lines).join("\n")).not.toMatch(/connection lost|malformed/);
    });
  });

  describe("cookies on the path form", () => {
    it("scopes every Set-Cookie to /t/<name>/ and drops Domain, keeping the other attributes", async () => {
      const response = await visit(`${base}/t/demo/set-cookies`);
      expect(response.headers["set-cookie"]).toEqual([
        "sid=1; Path=/t/demo/; HttpOnly",
        "a=2; Path=/t/demo/",
        "b=3; Path=/t/demo/x; Secure; SameSite=Lax",
      ]);
      // The body is passed on as the origin encoded it.
      expect(response.headers["content-encoding"]).toBe("gzip");
      expect(gunzipSync(response.body).toString()).toBe("cookies set");
    });

    it("keeps cookies of <name>.<base> on that host: a Domain of the base domain is dropped", async () => {
      const response = await visit(`http://demo.localhost:${relay.port}/set-cookies`);
      expect(response.headers["set-cookie"]).toEqual(["sid=1; Path=/; HttpOnly", "a=2", "b=3; path=/x; Secure; SameSite=Lax"]);
    });

    it("keeps one tunnel's cookies from another tunnel's requests (RFC 6265 path-match)", async () => {
      const response = await visit(`${base}/t/demo/set-cookies`);
      const paths = (response.headers["set-cookie"] ?? []).map((c) => /Path=([^;]*)/.exec(c)![1]!);
      const pathMatch = (request: string, cookie: string) =>
        request === cookie || (request.startsWith(cookie) && (cookie.endsWith("/") || request[cookie.length] === "/"));
      expect(paths.filter((p) => pathMatch("/t/other/", p))).toEqual([]);
      expect(paths.filter((p) => pathMatch("/t/demo/page", p))).toEqual(["/t/demo/", "/t/demo/"]);
    });
  });

  describe("spoofing", () => {
    it("drops a visitor's Forwarded, X-Real-IP, x-burrow-* and cf-* fields, and sends its own X-Real-IP", async () => {
      const response = await visit(`http://demo.localhost:${relay.port}/echo`, {
        headers: {
          forwarded: "for=6.6.6.6",
          "x-real-ip": "6.6.6.6",
          "x-burrow-path": "/elsewhere",
          "x-burrow-tunnel": "other",
          "x-burrow-client-ip": "6.6.6.6",
          "cf-ray": "fake",
          "cf-ipcountry": "XX",
        },
      });
      const seen = JSON.parse(page(response));
      expect(seen.url).toBe("/echo");
      expect(Object.keys(seen.headers).filter((name) => /^(forwarded|x-burrow-|cf-)/.test(name))).toEqual([]);
      expect(seen.headers["x-real-ip"]).toBe("127.0.0.1");
      expect(seen.headers["x-forwarded-for"]).toBe("127.0.0.1");
    });

    it(
      launcher === "wrangler"
        ? "trusts CF-Connecting-IP, which wrangler dev sets (as Cloudflare does) when the client sent none"
        : `ignores a visitor's CF-Connecting-IP: ${launcher} has no Cloudflare in front`,
      async () => {
        const response = await visit(`http://demo.localhost:${relay.port}/echo`, { headers: { "cf-connecting-ip": "6.6.6.6" } });
        const seen = JSON.parse(page(response));
        expect(seen.headers["cf-connecting-ip"]).toBeUndefined();
        // wrangler dev 4.86 passes a client's own CF-Connecting-IP on unchanged: spoofable locally only.
        expect(seen.headers["x-real-ip"]).toBe(relay.can.peerAddress ? "127.0.0.1" : "6.6.6.6");
      },
    );

    it("strips an origin's own X-Burrow-Error, so that it marks the relay's pages only", async () => {
      const response = await visit(`http://demo.localhost:${relay.port}/fake-error`);
      expect(response.status).toBe(502);
      expect(response.headers["x-burrow-error"]).toBeUndefined();
      expect(page(response)).toBe("the origin's own 502");
    });

    it("never echoes a name that is not a tunnel name, and marks relay pages nosniff", async () => {
      const response = await visit(`${base}/t/%3Cscript%3Ealert(1)%3C%2Fscript%3E/`);
      expect(response.status).toBe(400);
      expect(page(response)).not.toMatch(/script|alert/);
      expect(page(response)).toContain("That name is not a tunnel name");
      expect(response.headers["x-content-type-options"]).toBe("nosniff");
      expect((await visit(`${base}/`)).headers["x-content-type-options"]).toBe("nosniff");
    });
  });

  describe("the relay's own endpoints", () => {
    it.each([
      ["/t/demo/../_burrow/connect?name=demo", /that name is reserved/],
      ["/t/demo/%2e%2e/_burrow/connect?name=demo", /that name is reserved/],
      ["/t/demo/%2E%2E/_burrow/session?name=demo", /that name is reserved/],
      ["/t/_burrow/", /that name is reserved/],
      ["/t/www/", /the name "www" is reserved/],
      ["/t/%77ww/", /the name "www" is reserved/],
    ])("answers %s with 404 not-found: no tunnel's URL space reaches them", async (path, message) => {
      const seen = origin.requests.length;
      const response = await new Promise<Visit>((resolve, reject) => {
        // Raw path, as sent: Node's http keeps dot segments, a browser would resolve them first.
        const request = http.request(
          { host: "127.0.0.1", port: relay.port, path, headers: { host: `localhost:${relay.port}`, upgrade: "websocket" } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () =>
              resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }),
            );
          },
        );
        request.on("error", reject);
        request.end();
      });
      expect(response.status).toBe(404);
      expect(response.headers["x-burrow-error"]).toBe("not-found");
      expect(page(response)).toMatch(message);
      expect(origin.requests.length).toBe(seen);
    });

    it("answers a reserved name on its subdomain with 404 not-found", async () => {
      const response = await visit(`http://www.localhost:${relay.port}/`);
      expect(response.status).toBe(404);
      expect(page(response)).toContain('the name "www" is reserved');
    });

    it.each([CONNECT_PATH, `${CONNECT_PATH}?name=demo`, `${SESSION_PATH}?name=demo`, "/_burrow/anything"])(
      "hands %s on <name>.<base> to the tunnel, never to the relay",
      async (path) => {
        const seen = origin.requests.length;
        const response = await visit(`http://demo.localhost:${relay.port}${path}`, { method: "POST", body: new Uint8Array(3) });
        expect(response.headers["x-burrow-error"]).toBeUndefined();
        expect(origin.requests.slice(seen).map((r) => r.url)).toEqual([path]);
      },
    );
  });
});
