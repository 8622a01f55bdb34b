import { FrameType } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { type Answer, ask, githubSignature, Trickler } from "../_trickle.ts";

// What one visitor may hold of a tunnel: its share of the streams, and of the bodies read
// before their signature is checked, which have a pool, a deadline and a minimum rate of their
// own. Against the relay on plain workerd, which sees each visitor's own TCP address: visitors
// come from several loopback addresses (127.0.0.2, 127.0.0.3, ...).

const SECRET = "hook-secret";
const WEBHOOK = {
  basicAuth: [],
  allowIp: [],
  webhooks: [{ kind: "github" as const, header: "x-hub-signature-256", secret: SECRET }],
};

/** Asks until the relay answers 503 (what `from` holds is counted by then), within 10 s. */
async function until503(url: string, from: string, body: Uint8Array, headers: Record<string, string>): Promise<Answer> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const answer = await ask(url, from, { method: "POST", body, headers });
    if (answer.status === 503) return answer;
    if (Date.now() > deadline)
      throw new Error(`no 503 for ${from} within 10s; the last answer was ${answer.status} ${answer.code}`);
  }
}

describe("a tunnel's visitors share its slots", () => {
  let relay: Relay;
  /** The same, with a short deadline for bodies in check. */
  let paced: Relay;

  beforeAll(async () => {
    const vars = {
      MAX_STREAMS_PER_TUNNEL: "4",
      MAX_STREAMS_PER_VISITOR: "2",
      MAX_SIGNED_BODIES: "8",
      MAX_SIGNED_BODY_BYTES: "65536",
      MIN_SIGNED_BODY_BYTES_PER_SECOND: "100",
    };
    [relay, paced] = await Promise.all([
      // Tricklers keep their bodies in check for as long as a test needs.
      Relay.start({ launcher: "workerd", vars: { ...vars, SIGNED_BODY_SECONDS: "600" } }),
      Relay.start({ launcher: "workerd", vars: { ...vars, SIGNED_BODY_SECONDS: "8" } }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([relay?.dispose(), paced?.dispose()]);
  });

  it("delivers a correctly signed webhook while others trickle bodies with a wrong signature", async () => {
    const agent = await RawAgent.hello(relay, "hooks", { rules: WEBHOOK });
    const url = `http://hooks.localhost:${relay.port}/github`;
    const wrong = githubSignature(new Uint8Array([1]), SECRET);
    // As many as the tunnel has streams: before bodies in check had a pool of their own, these
    // four held every stream of the tunnel for as long as they trickled.
    const tricklers = ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"].map(
      (from) => new Trickler(url, { from, headers: { "x-hub-signature-256": wrong }, chunk: 200, everyMs: 200, total: 60_000 }),
    );
    try {
      await Promise.all(tricklers.map((t) => t.started));
      const probe = new Uint8Array(10);
      const probes = await Promise.all(
        ["127.0.0.2", "127.0.0.3"].map((from) => until503(url, from, probe, { "x-hub-signature-256": wrong })),
      );

      const body = new Uint8Array([...Buffer.from('{"action":"opened"}')]);
      const delivery = ask(url, "127.0.0.4", {
        method: "POST",
        body,
        headers: { "x-hub-signature-256": githubSignature(body, SECRET) },
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      expect(Buffer.from((await agent.nextOf(FrameType.Data)).bytes)).toEqual(Buffer.from(body));
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
      expect(await delivery).toMatchObject({ status: 204 });

      // Each trickler's address holds its share of the bodies in check, and no more.
      for (const answer of probes) {
        expect(answer.code).toBe("too-many-from-address");
        expect(answer.text).toContain("MAX_STREAMS_PER_VISITOR: 2");
      }
      expect(agent.frames.filter((f) => f.type === FrameType.RequestHead)).toEqual([]);
    } finally {
      for (const t of tricklers) t.stop();
    }
  });

  it("answers 408 to a body slower than the minimum rate, and to one not whole by the deadline", async () => {
    await RawAgent.hello(paced, "slow-hooks", { rules: WEBHOOK });
    const url = `http://slow-hooks.localhost:${paced.port}/github`;
    const headers = { "x-hub-signature-256": githubSignature(new Uint8Array([1]), SECRET) };
    // Ten bytes, then nothing: behind the minimum rate once the grace is over.
    const stalled = new Trickler(url, { from: "127.0.0.5", headers, chunk: 10, everyMs: 3_600_000, total: 1000 });
    // 1000 bytes a second, ten times the minimum, but not whole within SIGNED_BODY_SECONDS.
    const steady = new Trickler(url, { from: "127.0.0.5", headers, chunk: 200, everyMs: 200, total: 60_000 });
    try {
      const [slow, late] = await Promise.all([stalled.answer, steady.answer]);
      expect(slow).toMatchObject({ status: 408, code: "body-too-slow" });
      expect(slow.text).toContain("100 bytes a second, MIN_SIGNED_BODY_BYTES_PER_SECOND");
      expect(late).toMatchObject({ status: 408, code: "body-too-slow" });
      expect(late.text).toContain("not whole within 8s, the limit (SIGNED_BODY_SECONDS)");
    } finally {
      stalled.stop();
      steady.stop();
    }
    // Their places are free again: the same address has its whole share.
    const body = new Uint8Array(10);
    const again = await Promise.all(
      [1, 2].map(() =>
        ask(url, "127.0.0.5", { method: "POST", body, headers: { "x-hub-signature-256": githubSignature(body, "other") } }),
      ),
    );
    expect(again.map((a) => a.status)).toEqual([401, 401]);
  }, 60_000);

  it("gives each address a share of the streams: past it 503 too-many-from-address, while another address gets through", async () => {
    const agent = await RawAgent.hello(relay, "shared");
    const url = `http://shared.localhost:${relay.port}/`;
    // Two requests the origin does not answer (or whose visitors left: the relay cannot tell).
    const held = [ask(url, "127.0.0.2"), ask(url, "127.0.0.2")];
    const heads = [await agent.nextOf(FrameType.RequestHead), await agent.nextOf(FrameType.RequestHead)];
    const refused = await ask(url, "127.0.0.2");
    expect(refused).toMatchObject({ status: 503, code: "too-many-from-address" });
    expect(refused.text).toContain("Your address holds 2 of this tunnel's requests and WebSockets open");
    expect(refused.text).toContain("MAX_STREAMS_PER_VISITOR: 2");

    const other = ask(url, "127.0.0.3");
    const head = await agent.nextOf(FrameType.RequestHead);
    agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
    expect((await other).status).toBe(204);

    for (const { stream } of heads) agent.send({ type: FrameType.ResponseHead, stream, status: 204, headers: [] });
    expect((await Promise.all(held)).map((a) => a.status)).toEqual([204, 204]);
    const after = ask(url, "127.0.0.2");
    agent.send({
      type: FrameType.ResponseHead,
      stream: (await agent.nextOf(FrameType.RequestHead)).stream,
      status: 204,
      headers: [],
    });
    expect((await after).status).toBe(204);
  });

  it("counts a visitor's idle WebSockets in its share", async () => {
    const agent = await RawAgent.hello(relay, "sockets");
    const url = `http://sockets.localhost:${relay.port}/`;
    const open = async (from: string) => {
      const socket = new WebSocket(`ws://127.0.0.1:${relay.port}/ws`, {
        headers: { host: `sockets.localhost:${relay.port}` },
        localAddress: from,
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 101, headers: [] });
      await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      return socket;
    };
    const sockets = [await open("127.0.0.6"), await open("127.0.0.6")];
    try {
      const refused = await ask(url, "127.0.0.6");
      expect(refused).toMatchObject({ status: 503, code: "too-many-from-address" });
      const other = ask(url, "127.0.0.7");
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
      expect((await other).status).toBe(204);
    } finally {
      for (const socket of sockets) socket.close(1000);
    }
  });
});
