// Visitor requests as streams of frames on the agent's connection: heads and bodies both ways,
// credit, a stream reset by what the agent got wrong on it (and only that stream), the limits.

import {
  CloseCode,
  CREDIT_BATCH,
  type DataFrame,
  FrameType,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  type RequestHeadFrame,
} from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { describe, expect, it } from "vitest";
import { CLIENT_IP, type MemoryLink, MemoryRelay, quietWarnings, tick } from "./_host.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** A visitor's GET to `name`, and its RequestHead as the agent gets it. */
async function request(relay: MemoryRelay, link: MemoryLink, path = "/", clientIp = CLIENT_IP) {
  const response = relay.visit("demo", path, {}, clientIp);
  const head = await link.nextOf(FrameType.RequestHead);
  return { response, head };
}

/** The agent answers `head` whole, in one message. */
function answer(link: MemoryLink, head: RequestHeadFrame, body: string, status = 200): Promise<void> {
  return link.deliver(
    { type: FrameType.ResponseHead, stream: head.stream, status, headers: [["content-type", "text/plain"]] },
    { type: FrameType.Data, stream: head.stream, bytes: text(body) },
    { type: FrameType.End, stream: head.stream },
  );
}

describe("a visitor's request", () => {
  it("reaches the agent as RequestHead and End, with the path under the prefix and the visitor's address", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const { head } = await request(relay, link, "/hello?x=1");
    expect(head).toMatchObject({ method: "GET", path: "/hello?x=1" });
    expect(head.headers).toContainEqual(["x-forwarded-for", CLIENT_IP]);
    expect(head.headers).toContainEqual(["x-forwarded-prefix", "/t/demo"]);
    expect(await link.next()).toEqual({ type: FrameType.End, stream: head.stream });
  });

  it("gets the agent's ResponseHead, Data and End as its response, whole or streamed", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const whole = await request(relay, link);
    await answer(link, whole.head, "all at once", 201);
    const response = await whole.response;
    expect(response.status).toBe(201);
    expect(response.headers.get("content-type")).toBe("text/plain");
    expect(await response.text()).toBe("all at once");

    const streamed = await request(relay, link);
    const stream = streamed.head.stream;
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [] });
    const started = await streamed.response;
    await link.deliver({ type: FrameType.Data, stream, bytes: text("one ") });
    await link.deliver({ type: FrameType.Data, stream, bytes: text("two") }, { type: FrameType.End, stream });
    expect(await started.text()).toBe("one two");
  });

  it("fails a streamed body that ends short of its Content-Length instead of ending it cleanly", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const { response, head } = await request(relay, link);
    const stream = head.stream;
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [["content-length", "10"]] });
    await link.deliver({ type: FrameType.Data, stream, bytes: text("short") }, { type: FrameType.End, stream });
    await expect((await response).text()).rejects.toThrow();
    // The same in one message: not answered whole, but streamed and failed.
    const whole = await request(relay, link);
    await link.deliver(
      { type: FrameType.ResponseHead, stream: whole.head.stream, status: 200, headers: [["content-length", "10"]] },
      { type: FrameType.Data, stream: whole.head.stream, bytes: text("short") },
      { type: FrameType.End, stream: whole.head.stream },
    );
    await expect((await whole.response).text()).rejects.toThrow();
  });

  it("answers 502 origin-unreachable when the agent resets the stream so", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const { response, head } = await request(relay, link);
    await link.deliver({
      type: FrameType.Reset,
      stream: head.stream,
      code: "origin-unreachable",
      message: "nothing on port 8000",
    });
    const page = await response;
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([502, "origin-unreachable"]);
    expect(await page.text()).toContain("nothing on port 8000");
  });

  it("answers 504 agent-timeout and resets the stream when no head comes within RESPONSE_TIMEOUT_SECONDS", async () => {
    const relay = new MemoryRelay({ RESPONSE_TIMEOUT_SECONDS: "0.1" });
    const { link } = await relay.agent("demo");
    const { response, head } = await request(relay, link);
    const page = await response;
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([504, "agent-timeout"]);
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({ stream: head.stream, code: "cancelled" });
  });
});

describe("credit", () => {
  it("sends a request body as Data within the agent's credit, and the rest once it grants more", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const body = new Uint8Array(INITIAL_WINDOW + 100_000).fill(7);
    const response = relay.visit("demo", "/upload", { method: "POST", body });
    const head = await link.nextOf(FrameType.RequestHead);
    expect(head.method).toBe("POST");
    let received = 0;
    while (received < INITIAL_WINDOW) {
      const frame = (await link.nextOf(FrameType.Data)) as DataFrame;
      expect(frame.bytes.byteLength).toBeLessThanOrEqual(MAX_DATA_CHUNK);
      received += frame.bytes.byteLength;
    }
    expect(received).toBe(INITIAL_WINDOW);
    await tick(20);
    expect(link.pending()).toEqual([]); // no more without credit
    await link.deliver({ type: FrameType.Credit, stream: head.stream, bytes: CREDIT_BATCH });
    for (;;) {
      const frame = await link.next();
      if (frame.type === FrameType.End) break;
      received += (frame as DataFrame).bytes.byteLength;
    }
    expect(received).toBe(body.byteLength);
    await answer(link, head, "stored");
    expect(await (await response).text()).toBe("stored");
  });

  it("credits the agent for response body the visitor read, not before", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const { response, head } = await request(relay, link);
    const stream = head.stream;
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [] });
    const chunk = new Uint8Array(MAX_DATA_CHUNK);
    for (let sent = 0; sent < CREDIT_BATCH; sent += chunk.byteLength)
      await link.deliver({ type: FrameType.Data, stream, bytes: chunk });
    await tick(20);
    expect(link.pending().filter((f) => f.type === FrameType.Credit)).toEqual([]);
    const reader = (await response).body!.getReader();
    for (let read = 0; read < CREDIT_BATCH; ) read += (await reader.read()).value!.byteLength;
    expect(await link.nextOf(FrameType.Credit)).toEqual({ type: FrameType.Credit, stream, bytes: CREDIT_BATCH });
  });

  it("resets only the stream whose Data goes past its credit", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const other = await request(relay, link, "/other");
    const greedy = await request(relay, link, "/greedy");
    const stream = greedy.head.stream;
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [] });
    const visitor = await greedy.response;
    const chunk = new Uint8Array(MAX_DATA_CHUNK);
    for (let sent = 0; sent < INITIAL_WINDOW; sent += chunk.byteLength)
      await link.deliver({ type: FrameType.Data, stream, bytes: chunk });
    expect(await link.nextOf(FrameType.Reset, 50).catch(() => undefined)).toBeUndefined();
    await link.deliver({ type: FrameType.Data, stream, bytes: new Uint8Array(1) });
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({
      stream,
      code: "protocol-error",
      message: expect.stringMatching(/credit/),
    });
    await expect(visitor.arrayBuffer()).rejects.toThrow();
    expect(warnings).toEqual([
      expect.stringMatching(new RegExp(`^tunnel demo: stream ${stream}: .*more response body than its credit allows`)),
    ]);
    // The connection and the other stream go on.
    expect(link.closed).toBeUndefined();
    await answer(link, other.head, "fine");
    expect(await (await other.response).text()).toBe("fine");
  });

  it("resets a stream whose agent grants more credit than the window", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const response = relay.visit("demo", "/upload", { method: "POST", body: "x" });
    const head = await link.nextOf(FrameType.RequestHead);
    await link.deliver({ type: FrameType.Credit, stream: head.stream, bytes: INITIAL_WINDOW });
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({ stream: head.stream, code: "protocol-error" });
    expect((await response).headers.get("x-burrow-error")).toBe("stream-reset");
    expect(warnings[0]).toMatch(/^tunnel demo: stream \d+: .*would exceed the 1048576-byte window/);
  });
});

describe("a frame that breaks the protocol", () => {
  it("resets the one stream it names while another stream goes on", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const good = await request(relay, link, "/good");
    const bad = await request(relay, link, "/bad");
    // A ResponseHead whose status is no HTTP status.
    await link.deliverBytes(encode([FrameType.ResponseHead, bad.head.stream, 999, []]));
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({ stream: bad.head.stream, code: "protocol-error" });
    const page = await bad.response;
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([502, "stream-reset"]);
    expect(warnings).toEqual([expect.stringMatching(/^tunnel demo: stream \d+: .*status is 999/)]);
    expect(link.closed).toBeUndefined();
    await answer(link, good.head, "still here");
    expect(await (await good.response).text()).toBe("still here");
  });

  it("resets a stream that gets Data before its head, and a second head", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const early = await request(relay, link);
    await link.deliver({ type: FrameType.Data, stream: early.head.stream, bytes: text("x") });
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({
      stream: early.head.stream,
      message: "body data before the response head",
    });
    const twice = await request(relay, link);
    const stream = twice.head.stream;
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [] });
    await link.deliver({ type: FrameType.ResponseHead, stream, status: 200, headers: [] });
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({ stream, message: "a second response head" });
    expect(warnings).toHaveLength(2);
  });

  it("closes a connection whose bytes are not frames (4002), failing its streams", async () => {
    const warnings = quietWarnings();
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const { response } = await request(relay, link);
    await link.deliverBytes(new Uint8Array([0xc1, 0xc1]));
    expect(link.closed?.code).toBe(CloseCode.ProtocolError);
    expect(link.closed?.reason).toMatch(/not valid msgpack/);
    expect((await response).headers.get("x-burrow-error")).toBe("agent-disconnected");
    expect(warnings).toEqual([expect.stringMatching(/^tunnel demo: closing the agent's connection: frame is not valid msgpack/)]);
  });

  it("answers frames for a stream that is gone with a Reset, not a close", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    await link.deliver({ type: FrameType.End, stream: 12345 });
    expect(await link.nextOf(FrameType.Reset)).toMatchObject({ stream: 12345, code: "cancelled" });
    expect(link.closed).toBeUndefined();
  });
});

describe("limits", () => {
  it("answers 503 too-many-streams past MAX_STREAMS_PER_TUNNEL", async () => {
    const relay = new MemoryRelay({ MAX_STREAMS_PER_TUNNEL: "2" });
    const { link } = await relay.agent("demo");
    const first = await request(relay, link, "/1", "198.51.100.1");
    await request(relay, link, "/2", "198.51.100.2");
    const refused = await relay.visit("demo", "/3", {}, "198.51.100.3");
    expect([refused.status, refused.headers.get("x-burrow-error"), refused.headers.get("retry-after")]).toEqual([
      503,
      "too-many-streams",
      "1",
    ]);
    // A stream that ends makes room.
    await answer(link, first.head, "done");
    await (await first.response).text();
    await request(relay, link, "/4", "198.51.100.3");
  });

  it("holds one visitor to its share of the streams (MAX_STREAMS_PER_VISITOR), not others", async () => {
    const relay = new MemoryRelay({ MAX_STREAMS_PER_TUNNEL: "10", MAX_STREAMS_PER_VISITOR: "2" });
    const { link } = await relay.agent("demo");
    await request(relay, link, "/1");
    await request(relay, link, "/2");
    const refused = await relay.visit("demo", "/3");
    expect([refused.status, refused.headers.get("x-burrow-error")]).toEqual([503, "too-many-from-address"]);
    await request(relay, link, "/4", "198.51.100.9");
  });
});
