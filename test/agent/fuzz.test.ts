import http from "node:http";
import type { AddressInfo } from "node:net";
import { CloseCode, encodeFrame, type Frame, FrameType, MAX_HEADER_BYTES, MAX_STREAM_ID } from "@burrow/protocol";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { AgentProcess } from "../_agent.ts";
import { type RelayConnection, ScriptedRelay } from "../_scripted-relay.ts";

// A real agent process on a scripted relay gets random frames, in random batches, for streams
// it knows and streams it does not, with values at and over the protocol's limits, while one
// well-behaved request rides along in every run. Origin: answers everything at once.

let relay: ScriptedRelay;
let server: http.Server;
let agent: AgentProcess;
let base = 0;

beforeAll(async () => {
  server = http.createServer((request, response) => {
    request.resume();
    response.end("ok");
  });
  const sockets = new WebSocketServer({ noServer: true });
  server.on("upgrade", (request, socket, head) => {
    sockets.handleUpgrade(request, socket, head, (ws) => ws.on("message", (data, binary) => ws.send(data, { binary })));
  });
  server.on("clientError", (_error, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  relay = await ScriptedRelay.start();
  const port = (server.address() as AddressInfo).port;
  agent = await AgentProcess.start("node", ["--port", String(port), "--relay", relay.url, "--name", "fuzzed"]);
});

afterAll(async () => {
  await agent?.stop();
  await relay?.close();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
});

function current(): RelayConnection {
  return relay.connections.at(-1)!;
}

/** Offsets into this run's block of stream ids, plus odd ids shared by every run. */
const streamOffset = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom(-1, -2, -3) },
);

const oddText = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: "grapheme", maxLength: 10 }),
  fc.constantFrom("#frag", "?a=1&b=%zz", "\\..\\", "%00", "@evil.example", "ü", "\u0100", "\ud800", " ", "\r\n", "//x"),
);

/**
 * Paths and values at the protocol's limits. (They once seemed to make runs fail at random: the
 * cause was a head without End, which node:http never sent to the origin; the agent now sends
 * every head at once. Replay a failing run with FUZZ_SEED and FUZZ_PATH.)
 */
const LONG_FIELDS = true;

const path = fc.oneof(
  fc.constantFrom("/", "/ws", "/a?b", "/ws#x", "//evil.example/", "/\u0100", "/caf\u00e9"),
  oddText.map((text) => `/${text}`),
  ...(LONG_FIELDS
    ? [fc.integer({ min: MAX_HEADER_BYTES - 2, max: MAX_HEADER_BYTES + 2 }).map((n) => `/${"p".repeat(n - 1)}`)]
    : []),
);

const headerName = fc.oneof(
  fc.constantFrom("x-a", "content-type", "content-length", "transfer-encoding", "host", "cookie", "sec-websocket-protocol"),
  fc.constantFrom("bad name", "", "é", "x:y"),
);
const headerValue = fc.oneof(
  oddText,
  fc.constantFrom("12", "-1", "chunked", "a b, c", "chat, chat", "\u00ff"),
  ...(LONG_FIELDS ? [fc.integer({ min: MAX_HEADER_BYTES - 8, max: MAX_HEADER_BYTES + 2 }).map((n) => "v".repeat(n))] : []),
);
const headers = fc.array(fc.tuple(headerName, headerValue), { maxLength: 4 });
const upgrade = fc.boolean().map((ws): [string, string][] =>
  ws
    ? [
        ["upgrade", "websocket"],
        ["connection", "Upgrade"],
      ]
    : [],
);

/** A frame with stream offsets still to resolve against the run's id block. */
type Draft = { frame: Frame; offset: number };

const draft = fc.oneof(
  fc
    .record({
      offset: streamOffset,
      method: fc.constantFrom("GET", "POST", "HEAD", "OPTIONS", "CONNECT", "G T", "DELETE"),
      path,
      headers,
      upgrade,
    })
    .map(
      ({ offset, method, path, headers, upgrade }): Draft => ({
        offset,
        frame: { type: FrameType.RequestHead, stream: 0, method, path, headers: [...upgrade, ...headers] },
      }),
    ),
  fc
    .record({ offset: streamOffset, bytes: fc.uint8Array({ maxLength: 64 }) })
    .map(({ offset, bytes }): Draft => ({ offset, frame: { type: FrameType.Data, stream: 0, bytes } })),
  streamOffset.map((offset): Draft => ({ offset, frame: { type: FrameType.End, stream: 0 } })),
  fc
    .record({ offset: streamOffset, bytes: fc.oneof(fc.integer({ min: 1, max: 0x7fff_ffff }), fc.constantFrom(0, -1, 2 ** 31)) })
    .map(({ offset, bytes }): Draft => ({ offset, frame: { type: FrameType.Credit, stream: 0, bytes } })),
  fc
    .record({ offset: streamOffset, code: fc.constantFrom("cancelled", "origin-error", "weird-new-code", "Bad Code") })
    .map(
      ({ offset, code }): Draft => ({ offset, frame: { type: FrameType.Reset, stream: 0, code: code as never, message: "x" } }),
    ),
  fc
    .record({ offset: streamOffset, binary: fc.boolean(), final: fc.boolean(), bytes: fc.uint8Array({ maxLength: 32 }) })
    .map(({ offset, ...rest }): Draft => ({ offset, frame: { type: FrameType.WsMessage, stream: 0, ...rest } })),
  fc
    .record({
      offset: streamOffset,
      code: fc.oneof(fc.integer({ min: 1000, max: 4999 }), fc.constantFrom(999, 5000, 1005, 1006, 1015)),
      reason: fc.oneof(fc.string({ maxLength: 130 }), fc.constantFrom("é".repeat(100), "x".repeat(124))),
    })
    .map(({ offset, code, reason }): Draft => ({ offset, frame: { type: FrameType.WsClose, stream: 0, code, reason } })),
);

/** Odd ids every run shares: the edges of the id space. */
const ODD_IDS: Record<number, number> = { [-1]: 0, [-2]: MAX_STREAM_ID, [-3]: 0x8000_0000 };

const run = fc.record({
  drafts: fc.array(draft, { minLength: 1, maxLength: 12 }),
  cuts: fc.array(fc.nat(12), { maxLength: 3 }),
});

/** Streams whose RequestHead the agent must answer: every one the relay did not reset itself. */
function expectedAnswers(frames: Frame[]): Set<number> {
  const pending = new Set<number>();
  for (const frame of frames) {
    if (frame.type === FrameType.RequestHead) pending.add(frame.stream);
    else if (frame.type === FrameType.Reset) pending.delete(frame.stream);
  }
  return pending;
}

function answeredStreams(connection: RelayConnection, from: number): Set<number> {
  const seen = new Set<number>();
  for (const frame of connection.frames.slice(from)) {
    if ((frame.type === FrameType.ResponseHead || frame.type === FrameType.Reset) && "stream" in frame) seen.add(frame.stream);
  }
  return seen;
}

describe("agent frame handling, fuzzed", () => {
  it("answers every request head, keeps one good request going and never fails, whatever frames arrive", async () => {
    await fc.assert(
      fc.asyncProperty(run, async ({ drafts, cuts }) => {
        base += 1000;
        const connection = current();
        const from = connection.frames.length;
        const frames = drafts.map(({ frame, offset }) => ({ ...frame, stream: offset > 0 ? base + offset : ODD_IDS[offset]! }));
        const good = base + 900;
        frames.splice(Math.floor(frames.length / 2), 0, {
          type: FrameType.RequestHead,
          stream: good,
          method: "GET",
          path: "/good",
          headers: [],
        });
        frames.push({ type: FrameType.End, stream: good });
        // Sent in one to four messages, cut where the run says.
        const points = [...new Set(cuts.map((c) => c % frames.length))].sort((a, b) => a - b);
        let start = 0;
        for (const point of [...points, frames.length]) {
          if (point <= start) continue;
          connection.sendBytes(Buffer.concat(frames.slice(start, point).map((frame) => encodeFrame(frame))));
          start = point;
        }
        const expected = expectedAnswers(frames);
        await connection
          .until(
            () => {
              const seen = answeredStreams(connection, from);
              const ended = connection.frames.slice(from).some((frame) => frame.type === FrameType.End && frame.stream === good);
              return ended && [...expected].every((id) => seen.has(id));
            },
            5_000,
            `answers to streams ${[...expected].join(", ")} and the end of the good request`,
          )
          .catch((error: Error) => {
            const said = agent.lines.slice(-8).join("\n").slice(0, 3000);
            const undecodable = connection.errors.map((e) => e.message).join("; ");
            throw new Error(`${error.message}; undecodable from the agent: ${undecodable}; the agent said:\n${said}`);
          });
        expect(connection.errors).toEqual([]);
        expect(relay.connections).toHaveLength(1);
      }),
      {
        numRuns: 60,
        endOnFailure: true,
        ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED), path: process.env.FUZZ_PATH } : {}),
      },
    );
    expect(agent.exitCode).toBeNull();
    expect(agent.output).not.toMatch(/unexpected failure|^error:/m);
  }, 60_000);

  it("survives bytes that are not frames: at worst it reconnects, and the next good request completes", async () => {
    const valid = encodeFrame({ type: FrameType.RequestHead, stream: 1, method: "GET", path: "/", headers: [["a", "b"]] });
    const garbage = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 64 }),
      fc.integer({ min: 1, max: valid.byteLength - 1 }).map((n) => valid.subarray(0, n)),
      fc.uint8Array({ minLength: 1, maxLength: 8 }).map((tail) => Buffer.concat([valid, tail])),
    );
    await fc.assert(
      fc.asyncProperty(garbage, async (bytes) => {
        base += 1000;
        const connection = current();
        const count = relay.connections.length;
        const good = base + 900;
        connection.sendBytes(bytes);
        connection.send({ type: FrameType.RequestHead, stream: good, method: "GET", path: "/good", headers: [] });
        connection.send({ type: FrameType.End, stream: good });
        const done = (c: RelayConnection) => c.frames.some((frame) => frame.type === FrameType.End && frame.stream === good);
        const outcome = await Promise.race([
          connection.until(() => done(connection), 10_000, "the good request's end").then(() => "served" as const),
          connection.closed.then(({ code }) => code),
        ]);
        if (outcome === "served") return;
        expect(outcome).toBe(CloseCode.ProtocolError);
        const next = await relay.connection(count);
        await next.hello;
        await agent.ready(agent.lines.findLastIndex((line) => line.includes("malformed frame")) + 1);
        next.send({ type: FrameType.RequestHead, stream: good, method: "GET", path: "/good", headers: [] });
        next.send({ type: FrameType.End, stream: good });
        await next.until(() => done(next), 10_000, "the good request's end after reconnecting");
      }),
      { numRuns: 25 },
    );
    expect(agent.exitCode).toBeNull();
    expect(agent.output).not.toMatch(/unexpected failure|^error:/m);
  }, 60_000);
});
