import net from "node:net";
import { FrameType } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { ask, githubSignature, Trickler } from "../_trickle.ts";

// Issue 19's rerun of slow bodies and per-address shares (test/edge/slots.test.ts has the
// fix's own tests): chunked bodies, tiny and huge declared lengths, and WebSockets that talk
// or close, against the relay on plain workerd, which sees each loopback address.

const SECRET = "hook-secret";
const WEBHOOK = {
  basicAuth: [],
  allowIp: [],
  webhooks: [{ kind: "github" as const, header: "x-hub-signature-256", secret: SECRET }],
};
const wrong = { "x-hub-signature-256": githubSignature(new Uint8Array([1]), SECRET) };

/** Sends `head` and `body` from `from` and returns the status line the relay answers. */
function rawFrom(port: number, from: string, head: string, body = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress: from });
    let text = "";
    socket.on("data", (chunk) => {
      text += chunk.toString("latin1");
      if (text.includes("\r\n")) {
        resolve(text.split("\r\n", 1)[0]!);
        socket.destroy();
      }
    });
    socket.on("error", reject);
    socket.write(`${head}\r\n\r\n${body}`);
  });
}

describe("slow bodies and shares, rerun", () => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start({
      launcher: "workerd",
      vars: {
        MAX_STREAMS_PER_TUNNEL: "4",
        MAX_STREAMS_PER_VISITOR: "2",
        MAX_SIGNED_BODIES: "8",
        MAX_SIGNED_BODY_BYTES: "65536",
        MIN_SIGNED_BODY_BYTES_PER_SECOND: "100",
        SIGNED_BODY_SECONDS: "8",
      },
    });
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("answers 408 to a chunked body that trickles, and to a declared byte that never comes", async () => {
    const agent = await RawAgent.hello(relay, "chunky", { rules: WEBHOOK });
    const url = `http://chunky.localhost:${relay.port}/github`;
    const chunked = new Trickler(url, {
      from: "127.0.0.21",
      headers: wrong,
      chunk: 300,
      everyMs: 200,
      total: 60_000,
      declared: false,
    });
    const oneByte = new Trickler(url, { from: "127.0.0.21", headers: wrong, chunk: 0, everyMs: 3_600_000, total: 1 });
    try {
      const [a, b] = await Promise.all([chunked.answer, oneByte.answer]);
      expect(a).toMatchObject({ status: 408, code: "body-too-slow" });
      expect(b).toMatchObject({ status: 408, code: "body-too-slow" });
    } finally {
      chunked.stop();
      oneByte.stop();
    }
    expect(agent.frames.filter((frame) => frame.type === FrameType.RequestHead)).toEqual([]);
  }, 60_000);

  it("refuses a huge declared length at once, a huge chunk by the rate, and an empty body's wrong signature, holding nothing after", async () => {
    const agent = await RawAgent.hello(relay, "huge", { rules: WEBHOOK });
    const host = `huge.localhost:${relay.port}`;
    const sig = `x-hub-signature-256: ${wrong["x-hub-signature-256"]}`;
    for (const length of ["65537", "10000000000", "99999999999999999999"]) {
      const status = await rawFrom(
        relay.port,
        "127.0.0.22",
        `POST /github HTTP/1.1\r\nhost: ${host}\r\n${sig}\r\ncontent-length: ${length}`,
      );
      expect(status, length).toMatch(/^HTTP\/1\.1 (413|400)/);
    }
    // A chunk that says it is larger than the limit: workerd does not show chunk sizes to the
    // Worker, so it is held until the minimum rate's grace is over, then 408 (measured: 5 s).
    const big = await rawFrom(
      relay.port,
      "127.0.0.22",
      `POST /github HTTP/1.1\r\nhost: ${host}\r\n${sig}\r\ntransfer-encoding: chunked`,
      "fffffff\r\naaaa",
    );
    expect(big).toMatch(/^HTTP\/1\.1 (413|408)/);
    const empty = await ask(`http://${host}/github`, "127.0.0.22", { method: "POST", headers: wrong });
    expect(empty.status).toBe(401);
    // None of these holds a place: the address has its whole share for two signed deliveries.
    const body = new Uint8Array([7]);
    const signed = { "x-hub-signature-256": githubSignature(body, SECRET) };
    const deliveries = [1, 2].map(() => ask(`http://${host}/github`, "127.0.0.22", { method: "POST", body, headers: signed }));
    for (let i = 0; i < 2; i++) {
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
    }
    expect((await Promise.all(deliveries)).map((a) => a.status)).toEqual([204, 204]);
  }, 60_000);

  it("counts chatty WebSockets in the share, and gives the places back when they close", async () => {
    const agent = await RawAgent.hello(relay, "chatty");
    const url = `http://chatty.localhost:${relay.port}/`;
    const open = async (from: string) => {
      const socket = new WebSocket(`ws://127.0.0.1:${relay.port}/ws`, {
        headers: { host: `chatty.localhost:${relay.port}` },
        localAddress: from,
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 101, headers: [] });
      await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      return socket;
    };
    const sockets = [await open("127.0.0.23"), await open("127.0.0.23")];
    const chatter = setInterval(() => {
      for (const socket of sockets) if (socket.readyState === socket.OPEN) socket.send("hello");
    }, 20);
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await ask(url, "127.0.0.23")).toMatchObject({ status: 503, code: "too-many-from-address" });
    } finally {
      clearInterval(chatter);
    }
    await Promise.all(sockets.map((socket) => new Promise((resolve) => socket.once("close", resolve).close(1000))));
    // The relay learns of each close; then the address gets through again.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const answer = ask(url, "127.0.0.23");
      const first = await Promise.race([
        answer,
        agent.nextOf(FrameType.RequestHead).then((head) => {
          agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
          return answer;
        }),
      ]);
      if (first.status === 204) break;
      expect(first.code).toBe("too-many-from-address");
      if (Date.now() > deadline) throw new Error("the address never got its share back after its WebSockets closed");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 30_000);

  it("keeps an address to its share whatever address fields its requests carry", async () => {
    const agent = await RawAgent.hello(relay, "spoofed");
    const url = `http://spoofed.localhost:${relay.port}/`;
    const claim = (n: number) => ({
      "cf-connecting-ip": `10.0.0.${n}`,
      "x-forwarded-for": `10.0.1.${n}`,
      "true-client-ip": `10.0.2.${n}`,
      "x-real-ip": `10.0.3.${n}`,
      forwarded: `for=10.0.4.${n}`,
    });
    const held = [ask(url, "127.0.0.24", { headers: claim(1) }), ask(url, "127.0.0.24", { headers: claim(2) })];
    const heads = [await agent.nextOf(FrameType.RequestHead), await agent.nextOf(FrameType.RequestHead)];
    expect(await ask(url, "127.0.0.24", { headers: claim(3) })).toMatchObject({ status: 503, code: "too-many-from-address" });
    for (const { stream } of heads) agent.send({ type: FrameType.ResponseHead, stream, status: 204, headers: [] });
    expect((await Promise.all(held)).map((a) => a.status)).toEqual([204, 204]);
  });
});
