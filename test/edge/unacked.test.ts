import {
  CloseCode,
  decodePollAnswer,
  encodeFrame,
  FrameType,
  SESSION_HEADER,
  SESSION_PATH,
  unackedLimit,
} from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { memory } from "../_memory.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { counted, provoke, receivedAll } from "../_unacked.ts";
import { at, visit } from "../_visit.ts";

// What the relay keeps for an agent until the agent acknowledges it is bounded (unackedLimit):
// an agent that makes the relay answer and never acknowledges is closed past the bound, and
// what was kept for it is let go; one that acknowledges late, within the bound, is not.

const MiB = 1024 * 1024;

describe("an agent that never acknowledges, on a relay with the default limits", () => {
  let relay: Relay;
  let origin: Origin;
  let bystander: AgentProcess;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
    bystander = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "bystander"));
  });

  afterAll(async () => {
    await bystander?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("is closed with 4006 once the relay keeps more frames for it than the bound, and the relay serves on", async () => {
    const limit = unackedLimit().frames;
    const before = memory(relay.pid).rss;
    const mute = await RawAgent.hello(relay, "mute");
    // 5,000 answers a message, each message once the last one's answers arrived (and so well
    // under MAX_AGENT_FRAMES_PER_SECOND): the relay keeps them all, as nothing is acknowledged.
    let sent = 0;
    while (sent <= limit && (await receivedAll(mute, sent))) {
      provoke(mute, 5000);
      sent += 5000;
    }
    const { code, reason } = await mute.closed;
    const peak = memory(relay.pid).peak;
    expect(code).toBe(CloseCode.Unacknowledged);
    expect(reason).toMatch(new RegExp(`^the agent left \\d+ frames unacknowledged, past the limit of ${limit}$`));
    // It got every answer up to the bound, and not one past it.
    expect(counted(mute)).toBeLessThanOrEqual(limit);
    expect((await visit(at(bystander.url, "/echo"))).status).toBe(200);
    // The same name is served again, by a new session.
    const again = await RawAgent.hello(relay, "mute");
    expect(again.frames.filter((frame) => frame.type === FrameType.Reset)).toEqual([]);
    again.socket.close(1000);
    const after = memory(relay.pid).rss;
    if (process.env.TEST_DEBUG) {
      console.log(
        `relay RSS: ${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)}, ${(after / MiB).toFixed(0)} after`,
      );
    }
  });
});

describe("an agent that acknowledges late or not at all, on a relay of 2 streams a tunnel", () => {
  let relay: Relay;
  let origin: Origin;
  // 2 streams' windows and 4 MiB of headroom: 6.5 MiB and 18,560 frames.
  const limit = unackedLimit(2);

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      Relay.start({ launcher: "workerd", vars: { MAX_STREAMS_PER_TUNNEL: "2" } }),
      Origin.start(),
    ]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it("keeps one that acknowledges each batch of answers late, however many it provokes", async () => {
    const late = await RawAgent.hello(relay, "late");
    // Three times the bound in all, each batch acknowledged only two messages later.
    const batch = 4000;
    let sent = 0;
    for (let round = 0; round < Math.ceil((3 * limit.frames) / batch); round++) {
      provoke(late, batch, Math.max(0, sent - batch));
      sent += batch;
      expect(await receivedAll(late, sent)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    provoke(late, 0, sent);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(late.socket.readyState).toBe(late.socket.OPEN);
    late.socket.close(1000);
  });

  it("closes one that takes an upload's data and grants credit but never acknowledges, once past the bytes", async () => {
    const greedy = await RawAgent.hello(relay, "greedy");
    const body = new Uint8Array(4 * limit.bytes);
    const visitor = visit(`http://greedy.localhost:${relay.port}/upload`, { method: "POST", body }).then(
      (answer) => answer.status,
      () => "broken",
    );
    // Credit for every Data frame as it comes, so flow control never stops the relay, and no Ack.
    const closed = greedy.closed;
    let done = false;
    void closed.then(() => {
      done = true;
    });
    while (!done) {
      const frame = await Promise.race([greedy.next().catch(() => undefined), closed.then(() => undefined)]);
      if (frame?.type === FrameType.Data) {
        greedy.send({ type: FrameType.Credit, stream: frame.stream, bytes: frame.bytes.byteLength });
      }
    }
    const { code, reason } = await closed;
    expect(code).toBe(CloseCode.Unacknowledged);
    expect(reason).toMatch(new RegExp(`^the agent left \\d+ bytes unacknowledged, past the limit of ${limit.bytes}$`));
    // The visitor's upload fails with the relay's page, not a hang.
    expect(await visitor).toSatisfy((status) => status === 502 || status === "broken");
  });

  it("closes an HTTPS-transport agent that acknowledges frames it never collects, once past the bytes", async () => {
    // It can count the relay's answers, so it acknowledges them (the session keeps nothing) but
    // never polls for them: they would wait in the session's queue, which has the same bound.
    const base = `http://127.0.0.1:${relay.port}${SESSION_PATH}?name=uncollected`;
    const host = { host: `localhost:${relay.port}` };
    const opened = await visit(base, { method: "POST", headers: host });
    const { session } = JSON.parse(opened.body.toString()) as { session: string };
    const headers = { ...host, [SESSION_HEADER]: session };
    let seq = 0;
    const post = (body: Uint8Array) => visit(`${base}&seq=${++seq}`, { method: "POST", body, headers });
    const poll = async (ack: number) => decodePollAnswer((await visit(`${base}&ack=${ack}&wait=0`, { headers })).body);
    await post(encodeFrame(RawAgent.helloFrame("uncollected")));
    expect((await poll(0)).seq).toBe(1); // Ready
    const end = encodeFrame({ type: FrameType.End, stream: 7 });
    // 8,000 answers a POST, each acknowledged with the POST after next: the session keeps
    // 16,000 at most, within its bound of frames.
    const ends = 8000;
    let answered = 0;
    while (answered * 40 < 2 * limit.bytes) {
      const ack = encodeFrame({ type: FrameType.Ack, received: Math.max(0, answered - ends) });
      const body = new Uint8Array(ack.byteLength + ends * end.byteLength);
      body.set(ack, 0);
      for (let i = 0; i < ends; i++) body.set(end, ack.byteLength + i * end.byteLength);
      expect((await post(body)).status).toBe(204);
      answered += ends;
      // Batch 1 again, as after a lost answer: keeps the session alive, collects nothing.
      expect((await poll(0)).seq).toBe(1);
    }
    const answer = await poll(1);
    expect(answer.close?.code).toBe(CloseCode.Unacknowledged);
    expect(answer.close?.reason).toMatch(new RegExp(`^the agent left \\d+ bytes uncollected, past the limit of ${limit.bytes}$`));
  });
});
