import http from "node:http";
import type { AddressInfo } from "node:net";
import { CloseCode, type Frame, FrameType, type HelloFrame, SESSION_HEADER, unackedLimit } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpsLink } from "../../agent/src/net/https-link.ts";
import { AgentProcess } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

// The agent's side of the bound on what a session keeps unacknowledged (unackedLimit): a relay
// that makes the agent answer and never acknowledges is left once past the bound, and the agent
// starts a new session. The scripted relay never sends an Ack.

let relay: ScriptedRelay;
let origin: Origin;
let agent: AgentProcess;

beforeAll(async () => {
  [relay, origin] = await Promise.all([ScriptedRelay.start(), Origin.start()]);
  agent = await AgentProcess.start("node", ["--port", String(origin.port), "--relay", relay.url, "--name", "patient"]);
});

afterAll(async () => {
  await agent?.stop();
  await relay?.close();
  await origin?.close();
});

const resets = (connection: RelayConnection) => connection.frames.filter((frame) => frame.type === FrameType.Reset).length;

describe("a relay that never acknowledges", () => {
  it("is left with 4006 once the agent keeps more frames for it than the bound, and the agent starts anew", async () => {
    const limit = unackedLimit().frames;
    const first = await relay.connection(0);
    let closed = false;
    void first.closed.then(() => {
      closed = true;
    });
    // CONNECT heads: each is answered with a Reset (the agent tunnels to its origin only).
    let stream = 0;
    let sent = 0;
    while (!closed && sent <= limit) {
      const heads = Array.from(
        { length: 5000 },
        (): Frame => ({ type: FrameType.RequestHead, stream: ++stream, method: "CONNECT", path: "/", headers: [] }),
      );
      first.send(...heads);
      sent += heads.length;
      await first.until(() => closed || resets(first) >= sent, 20_000, `${sent} resets`);
    }
    const { code, reason } = await first.closed;
    expect(code).toBe(CloseCode.Unacknowledged);
    expect(reason).toMatch(new RegExp(`^the relay left \\d+ frames unacknowledged, past the limit of ${limit}$`));
    expect(resets(first)).toBeLessThanOrEqual(limit);
    await agent.waitFor(new RegExp(`the relay left \\d+ frames unacknowledged, past the limit of ${limit}; ending the session`));
    // Back on a new session: nothing of the old one is kept to resume.
    const second = await relay.connection(1);
    expect(((await second.hello) as HelloFrame).resume).toBeNull();
  });
});

describe("a relay that takes none of the HTTPS transport's POSTs", () => {
  it("is left with 4006 once the agent holds more for it than the bound, and what was held is let go", async () => {
    // Opens sessions, then holds every poll and every POST open without an answer; a DELETE
    // (the agent's goodbye) is answered.
    const held: http.ServerResponse[] = [];
    const goodbyes: string[] = [];
    const server = http.createServer((request, response) => {
      if (request.method === "POST" && !request.headers[SESSION_HEADER]) {
        response.writeHead(201, { "content-type": "application/json" }).end('{"session":"stalled"}');
      } else if (request.method === "DELETE") {
        goodbyes.push(request.url ?? "");
        response.writeHead(204).end();
      } else {
        request.resume();
        held.push(response);
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const relayUrl = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      const link = await HttpsLink.open(
        relayUrl,
        "stalled",
        { proxy: undefined, ca: [], insecure: false, timeoutMs: 5000 },
        20_000,
      );
      const closed = new Promise<{ code: number; reason: string }>((resolve) => {
        link.onclose = (code, reason) => resolve({ code, reason });
      });
      // One buffer sent again and again: counted each time, allocated once.
      const message = new Uint8Array(1024 * 1024);
      const limit = unackedLimit().bytes;
      for (let sent = 0; sent <= limit + message.byteLength; sent += message.byteLength) link.send(message);
      const { code, reason } = await closed;
      expect(code).toBe(CloseCode.Unacknowledged);
      expect(reason).toMatch(new RegExp(`^the relay left \\d+ bytes untaken, past the limit of ${limit}$`));
      // The agent told the relay why, as it can.
      await expect.poll(() => goodbyes.length).toBe(1);
      expect(goodbyes[0]).toContain(`code=${CloseCode.Unacknowledged}`);
    } finally {
      for (const response of held) response.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
