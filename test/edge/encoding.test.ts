import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RELAY_FORMS, Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

const HTML = `<!doctype html><p>${"uncompressed ".repeat(200)}</p>`;

// Pins where an uncompressed text response gets compressed on its way to a visitor who accepts
// gzip. Not in the relay: under plain workerd it arrives as the origin sent it. wrangler dev's
// entry Worker (miniflare 4.20260426, `ensureAcceptableEncoding` in
// workers/core/entry.worker.js) gzips or brotlis the content types Cloudflare's edge compresses
// (its compression docs' list: text/html, text/css, text/javascript, ...), as production does.
describe.each(RELAY_FORMS)("an uncompressed response on %s", (launcher) => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher }), Origin.start()]);
    agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "plain"));
    for (const [path, type] of [
      ["/page.html", "text/html"],
      ["/data.bin", "application/octet-stream"],
    ] as const) {
      origin.route(path, (_, response) => {
        response.writeHead(200, { "content-type": type, "content-length": String(HTML.length) });
        response.end(HTML);
      });
    }
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  for (const form of ["subdomain", "path"] as const) {
    const url = (path: string) =>
      form === "path" ? `${relay.url}/t/plain${path}` : `http://plain.localhost:${relay.port}${path}`;

    it(`text/html by ${form}: ${launcher === "wrangler" ? "gzipped by wrangler dev" : "as the origin sent it"} for a visitor who accepts gzip`, async () => {
      const page = await visit(url("/page.html"), { headers: { "accept-encoding": "gzip" } });
      expect(page.status).toBe(200);
      if (launcher === "wrangler") {
        expect(page.headers["content-encoding"]).toBe("gzip");
        expect(page.headers["content-length"]).toBeUndefined();
        expect(page.headers["transfer-encoding"]).toBe("chunked");
        expect(gunzipSync(page.body).toString()).toBe(HTML);
      } else {
        expect(page.headers["content-encoding"]).toBeUndefined();
        expect(page.headers["content-length"]).toBe(String(HTML.length));
        expect(page.body.toString()).toBe(HTML);
      }
    });

    it(`text/html by ${form}: as the origin sent it for a visitor who accepts no encoding`, async () => {
      const page = await visit(url("/page.html"), { headers: { "accept-encoding": "identity" } });
      expect(page.headers["content-encoding"]).toBeUndefined();
      expect(page.body.toString()).toBe(HTML);
    });

    it(`application/octet-stream by ${form}: as the origin sent it, Content-Length included`, async () => {
      const data = await visit(url("/data.bin"), { headers: { "accept-encoding": "gzip, br" } });
      expect(data.headers["content-encoding"]).toBeUndefined();
      expect(data.headers["content-length"]).toBe(String(HTML.length));
      expect(data.body.toString()).toBe(HTML);
    });
  }
});
