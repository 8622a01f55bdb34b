import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { strayTunnel, withoutTunnelCookie } from "../../edge/src/core/strays.ts";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RELAY_FORMS, Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

const PAGE = `<!doctype html><link rel="stylesheet" href="/style.css"><p>hi</p><script src="/app.js"></script>`;
const CHROMIUM = "/usr/bin/chromium";

/** The DOM of `url` after its scripts ran, as headless Chromium (Debian's package) saw it. */
async function renderedDom(url: string): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), "burrow-chromium-"));
  try {
    // Asynchronous: the origin answers from this process's event loop.
    const args = [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      `--user-data-dir=${profile}`,
      "--virtual-time-budget=5000",
      "--dump-dom",
      url,
    ];
    const { stdout } = await promisify(execFile)(CHROMIUM, args, { encoding: "utf8", timeout: 30_000 });
    return stdout;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

describe("strayTunnel", () => {
  const url = new URL("https://relay.example/style.css");
  it.each([
    ["a Referer under /t/<name>/ of the same origin", { referer: "https://relay.example/t/demo/x" }, "demo"],
    ["a Referer of another origin", { referer: "https://evil.example/t/demo/" }, undefined],
    ["a Referer of another scheme", { referer: "http://relay.example/t/demo/" }, undefined],
    ["a Referer outside /t/", { referer: "https://relay.example/other/", cookie: "burrow_tunnel=demo" }, undefined],
    ["a Referer naming a reserved name", { referer: "https://relay.example/t/admin/" }, undefined],
    ["a Referer naming no tunnel", { referer: "https://relay.example/t/Not_A_Name/" }, undefined],
    ["a Referer that is no URL", { referer: "::", cookie: "burrow_tunnel=demo" }, undefined],
    ["only the cookie", { cookie: "a=1; burrow_tunnel=demo" }, "demo"],
    ["the cookie on a cross-site request", { cookie: "burrow_tunnel=demo", "sec-fetch-site": "cross-site" }, undefined],
    ["the cookie on a typed URL", { cookie: "burrow_tunnel=demo", "sec-fetch-site": "none" }, undefined],
    ["the cookie naming a reserved name", { cookie: "burrow_tunnel=www" }, undefined],
    ["nothing", {}, undefined],
  ])("with %s: %s", (_, headers, expected) => {
    expect(strayTunnel(url, new Headers(headers))).toBe(expected);
  });

  it.each(["/", "/t", "/t/", "/_burrow", "/_burrow/info", "/_burrow/nope"])("never redirects the relay's own %s", (path) => {
    const headers = new Headers({ referer: "https://relay.example/t/demo/", cookie: "burrow_tunnel=demo" });
    expect(strayTunnel(new URL(path, url), headers)).toBeUndefined();
  });

  it("drops only the relay's cookie from a Cookie header", () => {
    expect(withoutTunnelCookie("a=1; burrow_tunnel=demo; b=2")).toBe("a=1; b=2");
    expect(withoutTunnelCookie("burrow_tunnel=demo")).toBeUndefined();
  });
});

describe.each(RELAY_FORMS)("root-relative links of a tunnel reached by path, on %s", (launcher) => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;
  let base: string;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher }), Origin.start()]);
    agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "demo"));
    base = `http://localhost:${relay.port}`;
    origin.route("/", (_, response) => {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8", "set-cookie": "sid=1; Path=/" });
      response.end(PAGE);
    });
    origin.route("/private", (_, response) => {
      response.writeHead(200, { "content-type": "text/html", "referrer-policy": "no-referrer" });
      response.end(PAGE);
    });
    origin.route("/style.css", (_, response) => {
      response.writeHead(200, { "content-type": "text/css" });
      response.end("p { color: rgb(1, 2, 3) }");
    });
    origin.route("/app.js", (_, response) => {
      response.writeHead(200, { "content-type": "text/javascript" });
      response.end("document.body.dataset.color = getComputedStyle(document.querySelector('p')).color;");
    });
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("sets the routing cookie on the tunnel's pages, after the origin's own scoped cookies", async () => {
    const page = await visit(`${base}/t/demo/`);
    expect(page.status).toBe(200);
    expect(page.body.toString()).toBe(PAGE);
    expect(page.headers["set-cookie"]).toEqual(["sid=1; Path=/t/demo/", "burrow_tunnel=demo; Path=/; SameSite=Lax; HttpOnly"]);
    const again = await visit(`${base}/t/demo/`, { headers: { cookie: "burrow_tunnel=demo" } });
    expect(again.headers["set-cookie"]).toEqual(["sid=1; Path=/t/demo/"]);
    const css = await visit(`${base}/t/demo/style.css`);
    expect(css.headers["set-cookie"]).toBeUndefined();
  });

  it("redirects /style.css and /app.js to the tunnel of the page's Referer, with 307 and no-store", async () => {
    for (const path of ["/style.css", "/app.js?v=2"]) {
      const stray = await visit(`${base}${path}`, { headers: { referer: `${base}/t/demo/` } });
      expect(stray.status).toBe(307);
      expect(stray.headers.location).toBe(`/t/demo${path}`);
      expect(stray.headers["cache-control"]).toBe("no-store");
      const followed = await visit(`${base}${stray.headers.location}`);
      expect(followed.status).toBe(200);
    }
    const followed = await visit(`${base}/t/demo/style.css`);
    expect(followed.body.toString()).toBe("p { color: rgb(1, 2, 3) }");
  });

  it("keeps the method and body of a redirected POST", async () => {
    const stray = await visit(`${base}/echo?x=1`, {
      method: "POST",
      headers: { referer: `${base}/t/demo/form` },
      body: Buffer.from("a=1"),
    });
    expect(stray.status).toBe(307);
    expect(stray.headers.location).toBe("/t/demo/echo?x=1");
    const followed = await visit(`${base}${stray.headers.location}`, { method: "POST", body: Buffer.from("a=1") });
    expect(JSON.parse(followed.body.toString())).toMatchObject({ method: "POST", url: "/echo?x=1", length: 3 });
  });

  it("redirects by the routing cookie when the page sent no Referer", async () => {
    const stray = await visit(`${base}/style.css`, { headers: { cookie: "burrow_tunnel=demo" } });
    expect(stray.status).toBe(307);
    expect(stray.headers.location).toBe("/t/demo/style.css");
  });

  it.each([
    ["a Referer of another origin", { referer: "http://evil.example/t/demo/" }],
    ["a Referer of the same relay by another host name", { referer: "http://127.0.0.1:1/t/demo/" }],
    ["a Referer naming a reserved name", { referer: "REL/t/admin/" }],
    ["the cookie on a cross-site request", { cookie: "burrow_tunnel=demo", "sec-fetch-site": "cross-site" }],
    ["neither", {}],
  ])("answers 404 not-found for %s", async (_, headers) => {
    const sent = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v.replace("REL", base)]));
    const stray = await visit(`${base}/style.css`, { headers: sent });
    expect(stray.status).toBe(404);
    expect(stray.headers["x-burrow-error"]).toBe("not-found");
  });

  it("never redirects the relay's own paths", async () => {
    const headers = { referer: `${base}/t/demo/`, cookie: "burrow_tunnel=demo" };
    expect((await visit(`${base}/_burrow/info`, { headers })).status).toBe(200);
    expect((await visit(`${base}/_burrow/nope`, { headers })).status).toBe(404);
    expect((await visit(`${base}/`, { headers })).body.toString()).toMatch(/^Burrow relay/);
    expect((await visit(`${base}/`, { method: "POST", headers })).status).toBe(404);
    expect((await visit(`${base}/t/`, { headers })).status).toBe(404);
  });

  it("keeps the routing cookie from the origin", async () => {
    const both = await visit(`${base}/t/demo/echo`, { headers: { cookie: "a=1; burrow_tunnel=demo" } });
    expect(JSON.parse(both.body.toString()).headers.cookie).toBe("a=1");
    const only = await visit(`${base}/t/demo/echo`, { headers: { cookie: "burrow_tunnel=demo" } });
    expect(JSON.parse(only.body.toString()).headers.cookie).toBeUndefined();
  });

  it.skipIf(!existsSync(CHROMIUM))("serves a page's /style.css and /app.js to headless Chromium", async () => {
    expect(await renderedDom(`${base}/t/demo/`)).toContain('data-color="rgb(1, 2, 3)"');
    // No Referer at all: the routing cookie of the page's own response leads the way.
    expect(await renderedDom(`${base}/t/demo/private`)).toContain('data-color="rgb(1, 2, 3)"');
  });

  it("leaves tunnels reached by subdomain alone", async () => {
    const page = await visit(`http://demo.localhost:${relay.port}/`);
    expect(page.headers["set-cookie"]).toEqual(["sid=1; Path=/"]);
    const css = await visit(`http://demo.localhost:${relay.port}/style.css`, { headers: { cookie: "burrow_tunnel=demo" } });
    expect(css.status).toBe(200);
    expect(
      JSON.parse(
        (await visit(`http://demo.localhost:${relay.port}/echo`, { headers: { cookie: "burrow_tunnel=x" } })).body.toString(),
      ).headers.cookie,
    ).toBe("burrow_tunnel=x");
  });
});
