import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { freePort } from "../_process.ts";
import { Relay, ROOT } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

// The inspector's page in a real browser: Debian's chromium, driven by playwright-core (no
// browser download). Screenshots go to test/artifacts/, which git ignores.

const CHROMIUM = "/usr/bin/chromium";
const present = existsSync(CHROMIUM);
if (!present) {
  const message = `!!! SKIPPING the inspector's browser test: no ${CHROMIUM} (apt-get install chromium)`;
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
}
const ARTIFACTS = join(ROOT, "test/artifacts/inspector");

describe.skipIf(!present)("the inspector's page in Chromium", () => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;
  let port: number;
  let browser: BrowserContext;
  let page: Page;
  const profile = mkdtempSync(join(tmpdir(), "burrow-chromium-"));

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    [relay, origin, port] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start(), freePort()]);
    agent = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "browsed"), "--inspect", String(port)]);
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 900 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    page = browser.pages()[0] ?? (await browser.newPage());
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    rmSync(profile, { recursive: true, force: true });
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("shows a request live, opens its detail, and sends an edited replay to the origin", async () => {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.locator("#live", { hasText: "live" }).waitFor();
    await visit(at(agent.url, "/echo?browser=1"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: Buffer.from('{"from":"the visitor","n":1}'),
    });
    const row = page.locator("#list tr", { hasText: "/echo?browser=1" });
    await row.locator("td.status", { hasText: "200" }).waitFor();
    await page.screenshot({ path: join(ARTIFACTS, "1-list.png") });

    await row.click();
    await expect.poll(() => page.locator("#detail h2").textContent()).toBe("POST /echo?browser=1");
    expect(await page.locator("#detail pre.body-json").first().textContent()).toBe('{\n  "from": "the visitor",\n  "n": 1\n}');
    expect(await page.locator("#timings").textContent()).toMatch(/origin's head [\d.]+ ms/);
    await page.screenshot({ path: join(ARTIFACTS, "2-detail.png"), fullPage: true });

    const seen = origin.requests.length;
    await page.fill("#edit-method", "PUT");
    await page.fill("#edit-path", "/echo?browser=edited");
    await page.fill("#edit-body", "edited in the browser");
    await page.click("#replay-edited");
    await page.locator("#replay-status", { hasText: /^sent as #\d+$/ }).waitFor();
    await expect.poll(() => origin.requests.length).toBe(seen + 1);
    const reached = origin.requests.at(-1)!;
    expect(reached.method).toBe("PUT");
    expect(reached.url).toBe("/echo?browser=edited");

    const replayRow = page.locator("#list tr", { hasText: "/echo?browser=edited" });
    await replayRow.locator(".replay", { hasText: "replay of #" }).waitFor();
    await replayRow.locator("td.status", { hasText: "200" }).waitFor();
    await replayRow.click();
    await expect.poll(() => page.locator("#detail h2").textContent()).toBe("PUT /echo?browser=edited");
    await page.screenshot({ path: join(ARTIFACTS, "3-replay.png"), fullPage: true });

    await page.fill("#filter-path", "browser=1");
    await expect.poll(() => page.locator("#list tbody tr").count()).toBe(1);
    await page.fill("#filter-path", "");
    await page.fill("#filter-status", "4xx");
    await expect.poll(() => page.locator("#list tbody tr").count()).toBe(0);
  });

  it("says when a body was kept truncated, and shows a visitor WebSocket's messages", async () => {
    await page.fill("#filter-status", "");
    await visit(at(agent.url, "/bytes/100000"));
    await page.locator("#list tr", { hasText: "/bytes/100000" }).locator("td.status", { hasText: "200" }).waitFor();
    await page.locator("#list tr", { hasText: "/bytes/100000" }).click();
    await page.locator("#detail p.truncated", { hasText: "kept the first 64.0 KiB of 97.7 KiB" }).waitFor();

    const target = new URL(at(agent.url, "/ws/echo?browser=1").replace(/^http/, "ws"));
    const host = target.host;
    target.hostname = "127.0.0.1";
    const ws = new WebSocket(target.href, { headers: { host } });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.send("hello from the visitor");
    await new Promise((resolve) => ws.once("message", resolve));
    ws.close(1000, "done");
    const row = page.locator("#list tr", { hasText: "/ws/echo?browser=1" });
    await row.locator("td.status", { hasText: "101" }).waitFor();
    await row.click();
    await page.locator("#detail", { hasText: "closed by the visitor: 1000 done" }).waitFor();
    expect(await page.locator("#detail pre.body-text").allTextContents()).toEqual([
      "hello from the visitor",
      "hello from the visitor",
    ]);
    await page.screenshot({ path: join(ARTIFACTS, "4-websocket.png"), fullPage: true });
  });
});
