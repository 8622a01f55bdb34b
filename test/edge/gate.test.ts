import { CONNECT_PATH, SESSION_PATH } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { SlidingWindow } from "../../edge/src/core/rate.ts";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { RELAY_FORMS, Relay } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

describe("SlidingWindow", () => {
  it("admits `limit` attempts in any minute and says when the next one would be admitted", () => {
    const window = new SlidingWindow(60_000);
    for (let i = 0; i < 3; i++) expect(window.attempt(1000 + i * 10_000, 3)).toEqual({ ok: true });
    expect(window.attempt(30_000, 3)).toEqual({ ok: false, retryAfterSeconds: 31 }); // the first frees at 61 s
    expect(window.attempt(60_999, 3)).toEqual({ ok: false, retryAfterSeconds: 1 });
    expect(window.attempt(61_000, 3)).toEqual({ ok: true });
    expect(window.attempt(61_001, 3)).toMatchObject({ ok: false });
  });

  it("never counts refused attempts, and honours a lowered limit at once", () => {
    const window = new SlidingWindow(60_000);
    for (let i = 0; i < 5; i++) window.attempt(i, 5);
    for (let i = 0; i < 100; i++) expect(window.attempt(10 + i, 5).ok).toBe(false);
    expect(window.attempt(60_000, 5)).toEqual({ ok: true }); // only the attempt at 0 has left the window
    expect(window.attempt(60_001, 2)).toMatchObject({ ok: false });
  });
});

/** One connect attempt: the status of the upgrade's answer, and its Retry-After. */
function connect(relay: Relay, name: string): Promise<{ status: number; retryAfter?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${relay.port}${CONNECT_PATH}?name=${name}`, {
      headers: { host: `localhost:${relay.port}` },
    });
    socket.once("open", () => {
      socket.close(1000);
      resolve({ status: 101, body: "" });
    });
    socket.once("unexpected-response", (_, response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode!, retryAfter: response.headers["retry-after"], body }));
    });
    socket.once("error", reject);
  });
}

describe.each(RELAY_FORMS)("connection attempts per address on %s", (launcher) => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher, vars: { CONNECTS_PER_MINUTE: "60" } }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it("answers the 61st in a minute 429 rate-limited with Retry-After, while a connected agent keeps serving", async () => {
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "steady")); // attempt 1
    try {
      const answers = [];
      for (let i = 2; i <= 61; i++) answers.push(await connect(relay, `flood-${i}`));
      expect(answers.slice(0, -1).every((a) => a.status === 101)).toBe(true);
      const last = answers.at(-1)!;
      expect(last.status).toBe(429);
      expect(Number(last.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(Number(last.retryAfter)).toBeLessThanOrEqual(60);
      expect(last.body).toMatch(/^429 rate-limited\n\nToo many connection attempts from this address: the limit is 60 a minute/);
      // The HTTPS transport's sessions count with the connects.
      const session = await visit(`http://localhost:${relay.port}${SESSION_PATH}?name=flood-session`, { method: "POST" });
      expect(session.status).toBe(429);
      expect(session.headers["retry-after"]).toMatch(/^\d+$/);
      expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
      expect(agent.lines.join("\n")).not.toMatch(/connection lost/);
    } finally {
      await agent.stop("SIGINT");
    }
  });
});
