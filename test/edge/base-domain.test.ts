import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FrameType } from "@burrow/protocol";
import fc from "fast-check";
import { chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

// A relay on a real base domain, as a public relay runs (tunnel.example.test, reached at
// 127.0.0.1 with its Host): what one tunnel's origin may do to another tunnel's visitors, what
// an origin is told about its visitor, and which names a tunnel may take.

const BASE = "tunnel.example.test";
/** Debian's chromium, driven by playwright-core, as in test/e2e/inspector-browser.test.ts. */
const CHROMIUM = "/usr/bin/chromium";
const TUNNEL_HOST = `demo.${BASE}`;

/**
 * The domain a browser keeps a Set-Cookie for, read as RFC 6265 section 5.2 says (the last
 * Domain attribute, its value trimmed of spaces and tabs, one leading dot removed), written
 * apart from the relay's code: undefined for a host-only cookie.
 */
function browserDomain(setCookie: string): string | undefined {
  let domain: string | undefined;
  for (const attribute of setCookie.split(";").slice(1)) {
    const equals = attribute.indexOf("=");
    const name = (equals < 0 ? attribute : attribute.slice(0, equals)).replace(/^[ \t]+|[ \t]+$/g, "");
    if (name.toLowerCase() !== "domain") continue;
    const value = equals < 0 ? "" : attribute.slice(equals + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (value === "") continue; // RFC 6265 section 5.2.3: ignored
    domain = (value.startsWith(".") ? value.slice(1) : value).toLowerCase();
  }
  return domain;
}

/** The attributes other than Domain, as sent: what the relay must leave alone. */
function otherAttributes(setCookie: string): string[] {
  return setCookie
    .split(";")
    .slice(1)
    .filter((attribute) => attribute.split("=", 1)[0]!.trim().toLowerCase() !== "domain");
}

/**
 * Fields that servers and frameworks read as the client's address (RFC 7239, nginx, Akamai,
 * Cloudflare, Fastly, Google, Envoy, Azure, Fly, Vercel, Netlify, Rails, django-ipware,
 * request-ip), listed here apart from the relay's own list, plus the relay's and Cloudflare's.
 */
const ADDRESS_FIELDS = [
  "forwarded",
  "forwarded-for",
  "x-forwarded",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-real-ip",
  "x-client-ip",
  "client-ip",
  "true-client-ip",
  "x-cluster-client-ip",
  "fastly-client-ip",
  "x-original-forwarded-for",
  "x-proxyuser-ip",
  "x-appengine-user-ip",
  "x-envoy-external-address",
  "x-azure-clientip",
  "x-azure-socketip",
  "fly-client-ip",
  "x-vercel-forwarded-for",
  "x-nf-client-connection-ip",
  "x-originating-ip",
  "x-remote-ip",
  "x-remote-addr",
  "x-burrow-client-ip",
  "cf-connecting-ipv6",
  "cf-pseudo-ipv4",
];

/** Each character of `text` in upper or lower case, as `pick` says. */
const anyCase = (text: string) =>
  fc
    .array(fc.boolean(), { minLength: text.length, maxLength: text.length })
    .map((upper) => [...text].map((c, i) => (upper[i] ? c.toUpperCase() : c.toLowerCase())).join(""));
const blank = fc.constantFrom("", " ", "  ", "\t", " \t ");

describe("a relay on a real base domain", () => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ vars: { BASE_DOMAIN: BASE } }), Origin.start()]);
    // Sets the cookies the request lists (x-cookies, JSON), as a tunnel's page could.
    origin.route("/cookies", (request, response) => {
      response.setHeader("set-cookie", JSON.parse(String(request.headers["x-cookies"])) as string[]);
      response.end("set");
    });
    origin.route("/toss", (_, response) => {
      response.setHeader("set-cookie", [`tossed=1; Domain=${BASE}; Path=/`, `own=1; Domain=${TUNNEL_HOST}; Path=/`]);
      response.end("<p>tossed</p>");
    });
    agent = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "demo"), "--host-header", "preserve"]);
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  /** The Set-Cookie fields a visitor of `host` gets when the origin sets `cookies`. */
  async function cookiesSeen(host: string, path: string, cookies: string[]): Promise<string[]> {
    const response = await visit(`http://${host}:${relay.port}${path}`, { headers: { "x-cookies": JSON.stringify(cookies) } });
    expect(response.status).toBe(200);
    return response.headers["set-cookie"] ?? [];
  }

  describe("cookies", () => {
    it("keeps a tunnel's cookies on its own host: a Domain wider than it is dropped, its own is kept", async () => {
      const seen = await cookiesSeen(TUNNEL_HOST, "/cookies", [
        `a=1; Domain=${BASE}`,
        `b=2; domain=.TUNNEL.example.test; Path=/`,
        `c=3; Path=/;Domain = example.test ;HttpOnly`,
        "d=4; Domain=test",
        `e=5; Domain=other.${BASE}`,
        `f=6; Domain=${TUNNEL_HOST}; Secure`,
        "g=7; Domain=.Demo.Tunnel.Example.Test",
        `h=8; Domain=${TUNNEL_HOST}; Domain=${BASE}`,
        `i=9; Domain=${BASE}; Domain=${TUNNEL_HOST}`,
        "j=10; Max-Age=60",
      ]);
      expect(seen).toEqual([
        "a=1",
        "b=2; Path=/",
        "c=3; Path=/;HttpOnly",
        "d=4",
        "e=5",
        `f=6; Domain=${TUNNEL_HOST}; Secure`,
        `g=7; Domain=${TUNNEL_HOST}`,
        `h=8; Domain=${TUNNEL_HOST}`,
        `i=9; Domain=${TUNNEL_HOST}`,
        "j=10; Max-Age=60",
      ]);
    });

    it("never lets a browser keep a tunnel's cookie for more than its host, whatever the Domain's spelling", async () => {
      const domains = [BASE, "example.test", "test", TUNNEL_HOST, `other.${BASE}`, `x.${TUNNEL_HOST}`, `${BASE}.`, ""];
      const domain = fc
        .tuple(
          blank,
          anyCase("domain"),
          blank,
          blank,
          fc.constantFrom("", ".", ".."),
          fc.constantFrom(...domains).chain(anyCase),
          blank,
        )
        .map(([a, name, b, c, dots, value, d]) => `${a}${name}${b}=${c}${dots}${value}${d}`);
      const other = fc.constantFrom(" Path=/", " Secure", " HttpOnly", " SameSite=Lax", " Max-Age=60", "Path=/x ");
      const cookie = fc
        .tuple(fc.stringMatching(/^[a-z]{1,8}=[a-z0-9]{0,8}$/), fc.array(fc.oneof(domain, other), { minLength: 1, maxLength: 5 }))
        .map(([pair, attributes]) => [pair, ...attributes].join(";"));
      await fc.assert(
        fc.asyncProperty(fc.array(cookie, { minLength: 1, maxLength: 6 }), async (cookies) => {
          const seen = await cookiesSeen(TUNNEL_HOST, "/cookies", cookies);
          expect(seen).toHaveLength(cookies.length);
          seen.forEach((cookie, i) => {
            expect([undefined, TUNNEL_HOST]).toContain(browserDomain(cookie));
            // The name, value and other attributes as the origin set them (but for the
            // whitespace around them, which fields lose at their ends: RFC 9110 section 5.5).
            const trimmed = (text: string) => text.trim();
            expect(cookie.split(";")[0]!.trim()).toBe(cookies[i]!.split(";")[0]!.trim());
            expect(otherAttributes(cookie).map(trimmed)).toEqual(otherAttributes(cookies[i]!).map(trimmed));
          });
        }),
        { numRuns: 60 },
      );
    });

    it.skipIf(!existsSync(CHROMIUM))(
      "keeps a cookie one tunnel's page sets for the base domain from another tunnel, in Chromium",
      async () => {
        const other = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "other"));
        const profile = mkdtempSync(join(tmpdir(), "burrow-chromium-"));
        const browser = await chromium.launchPersistentContext(profile, {
          executablePath: CHROMIUM,
          headless: true,
          // Every name under the base domain is this machine, as a wildcard DNS record would say.
          args: ["--no-sandbox", "--disable-gpu", `--host-resolver-rules=MAP *.${BASE} 127.0.0.1, MAP ${BASE} 127.0.0.1`],
        });
        try {
          const page = browser.pages()[0] ?? (await browser.newPage());
          await page.goto(`http://${TUNNEL_HOST}:${relay.port}/toss`);
          const headers = async (host: string) => {
            await page.goto(`http://${host}:${relay.port}/echo`);
            return JSON.parse((await page.textContent("body")) ?? "{}").headers as Record<string, string>;
          };
          expect((await headers(TUNNEL_HOST)).cookie).toBe("tossed=1; own=1");
          expect((await headers(`other.${BASE}`)).cookie).toBeUndefined();
        } finally {
          await browser.close();
          rmSync(profile, { recursive: true, force: true });
          await other.stop("SIGINT");
        }
      },
    );

    it("gives tunnels reached by path host-only cookies under their prefix", async () => {
      const seen = await cookiesSeen(`evil.example`, "/t/demo/cookies", [
        `a=1; Domain=${BASE}; Path=/`,
        `b=2; Domain=${TUNNEL_HOST}`,
      ]);
      expect(seen.filter((c) => !c.startsWith("burrow_tunnel="))).toEqual(["a=1; Path=/t/demo/", "b=2; Path=/t/demo/"]);
    });
  });

  describe("what the origin is told", () => {
    /** Each name of ADDRESS_FIELDS in any case, with `_` for some of its `-`. */
    const spelled = (name: string) =>
      anyCase(name).chain((cased) =>
        fc
          .array(fc.boolean(), { minLength: 8, maxLength: 8 })
          .map((underscore) => cased.split("-").reduce((out, part, i) => `${out}${underscore[i % 8] ? "_" : "-"}${part}`)),
      );

    it("drops every client-address field a visitor sends, in any case and with _ for -, and states the address itself", async () => {
      const fields = fc.tuple(...ADDRESS_FIELDS.map(spelled));
      await fc.assert(
        fc.asyncProperty(fields, async (names) => {
          const headers = Object.fromEntries(names.map((name) => [name, "6.6.6.6"]));
          const response = await visit(`http://${TUNNEL_HOST}:${relay.port}/echo`, { headers });
          const seen = JSON.parse(response.body.toString()).headers as Record<string, string>;
          for (const [name, value] of Object.entries(seen)) {
            if (value.includes("6.6.6.6")) expect(name).toBe("x-forwarded-for"); // kept before the relay's own entry
          }
          expect(seen["x-real-ip"]).toBe("127.0.0.1");
          expect(seen["x-forwarded-for"]?.split(", ").at(-1)).toBe("127.0.0.1");
        }),
        { numRuns: 20 },
      );
    });

    it("names, for Host under --host-header preserve and in X-Forwarded-Host, only the public host the relay recognised", async () => {
      const told = async (url: string) => {
        const seen = JSON.parse((await visit(url)).body.toString()).headers as Record<string, string>;
        return [seen.host, seen["x-forwarded-host"]];
      };
      const port = relay.port;
      expect(await told(`http://${TUNNEL_HOST}:${port}/echo`)).toEqual([`${TUNNEL_HOST}:${port}`, `${TUNNEL_HOST}:${port}`]);
      // The path form: every tunnel shares the relay's host, the base domain.
      const hosts = fc.oneof(
        fc.domain().filter((host) => !host.endsWith(`.${BASE}`)),
        fc.ipV4(),
        fc.constantFrom("localhost", "127.0.0.1", BASE, "evil.example"),
      );
      await fc.assert(
        fc.asyncProperty(hosts, async (host) => {
          expect(await told(`http://${host}:${port}/t/demo/echo`)).toEqual([`${BASE}:${port}`, `${BASE}:${port}`]);
        }),
        { numRuns: 30 },
      );
    });
  });

  describe("names", () => {
    const punycode = ["xn--80ak6aa92e", "xn--pple-43d", "xn--a", "xn--demo-7ya"];

    it("refuses punycode (xn--) names to agents, saying how an operator allows them", async () => {
      for (const name of punycode) {
        const [, answer] = await RawAgent.say(relay, name);
        expect(answer).toMatchObject({
          type: FrameType.Refused,
          code: "name-reserved",
          message: expect.stringContaining("ALLOW_PUNYCODE_NAMES"),
        });
      }
      const real = new AgentProcess("node", tunnelArgs(origin.port, relay, "xn--80ak6aa92e"));
      expect(await real.exited).toBe(3);
      expect(real.output).toContain('the name "xn--80ak6aa92e" starts with xn--');
    });

    it("answers visitors of a punycode name with 404 not-found, by subdomain and by path", async () => {
      for (const url of [`http://xn--80ak6aa92e.${BASE}:${relay.port}/`, `http://${BASE}:${relay.port}/t/xn--80ak6aa92e/`]) {
        const response = await visit(url);
        expect([response.status, response.headers["x-burrow-error"]]).toEqual([404, "not-found"]);
        expect(response.body.toString()).toContain("refuses names that start with xn--");
      }
    });
  });
});

describe("a relay whose operator allows punycode names", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      Relay.start({ launcher: "workerd", vars: { BASE_DOMAIN: BASE, ALLOW_PUNYCODE_NAMES: "true" } }),
      Origin.start(),
    ]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it("admits them, and its visitors reach them", async () => {
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "xn--80ak6aa92e"));
    const response = await visit(`http://xn--80ak6aa92e.${BASE}:${relay.port}/echo`);
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body.toString()).url).toBe("/echo");
    await agent.stop("SIGINT");
  });
});
