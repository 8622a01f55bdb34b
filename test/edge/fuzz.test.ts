import net from "node:net";
import {
  CloseCode,
  CONNECT_PATH,
  decodeFrames,
  encodeFrame,
  FrameType,
  type HelloFrame,
  MAX_HEADER_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  SESSION_PATH,
  unackedLimit,
} from "@burrow/protocol";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { download } from "../_transfer.ts";
import { provoke, receivedAll } from "../_unacked.ts";
import { at, visit } from "../_visit.ts";

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz";
const token = (min: number, max: number) => fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: min, maxLength: max });
const visible = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));

/** Sends raw request bytes; resolves with the response head (status line and fields) or "" if the socket closed first. */
function rawHead(port: number, head: string, body: Uint8Array): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(Buffer.from(head, "latin1"));
      socket.end(body);
    });
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 10s to ${head.slice(0, 200)}`));
    }, 10_000);
    socket.on("data", (chunk) => {
      answer += chunk.toString("latin1");
      const end = answer.indexOf("\r\n\r\n");
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(answer.slice(0, end));
    });
    socket.on("error", () => undefined); // a reset after the answer, or before it: judged on close
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

describe("the relay under random requests", () => {
  let relay: Relay;
  let origin: Origin;
  let fuzzed: AgentProcess;
  let bystander: AgentProcess;

  beforeAll(async () => {
    // Plain workerd: the raw request target reaches the Worker as sent (wrangler dev resolves it first).
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
    [fuzzed, bystander] = await Promise.all([
      AgentProcess.start("node", tunnelArgs(origin.port, relay, "fuzz")),
      AgentProcess.start("node", tunnelArgs(origin.port, relay, "bystander")),
    ]);
  });

  afterAll(async () => {
    await fuzzed?.stop("SIGINT");
    await bystander?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("answers every request, never with a relay-error, while another tunnel keeps serving", async () => {
    const size = 32 * 1024 * 1024;
    const long = download(at(bystander.url, `/pattern/${size}`), 4 * 1024 * 1024);
    const port = relay.port;
    const segment = fc.oneof(
      fc.constantFrom("..", ".", "%2e%2e", "%2E.", "_burrow", "connect", "session", "%00", "%ff", "%2F", "%64", "echo", "ws", ""),
      fc.string({ unit: visible, maxLength: 12 }).map((s) => s.replace(/[?#]/g, "")),
    );
    const request = fc.record({
      method: fc.oneof(fc.constantFrom("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"), token(1, 70)),
      host: fc.constantFrom(
        "localhost",
        "fuzz.localhost",
        "www.localhost",
        "a.b.localhost",
        "_burrow.localhost",
        "FUZZ.localhost",
      ),
      start: fc.constantFrom(
        "",
        "/t/fuzz",
        "/t/%66uzz",
        "/t/_burrow",
        CONNECT_PATH,
        SESSION_PATH,
        `${SESSION_PATH}/x`,
        "/t/fuzz/..",
        "/t",
      ),
      segments: fc.array(segment, { maxLength: 6 }),
      query: fc.option(fc.string({ unit: visible, maxLength: 40 }).map((q) => `name=fuzz&${q.replace(/#/g, "")}`)),
      long: fc.option(fc.integer({ min: MAX_HEADER_BYTES - 50, max: MAX_HEADER_BYTES + 50 })),
      headers: fc.array(fc.tuple(token(1, 30), fc.string({ unit: fc.oneof(visible, fc.constant(" ")), maxLength: 40 })), {
        maxLength: 6,
      }),
      bigHeader: fc.option(fc.integer({ min: MAX_HEADER_BYTES - 40, max: MAX_HEADER_BYTES + 40 })),
      upgrade: fc.boolean(),
      body: fc.option(fc.uint8Array({ maxLength: 512 })),
    });
    const failures: string[] = [];
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        let path = `${r.start}/${r.segments.join("/")}`;
        if (r.long !== null) path += "x".repeat(Math.max(0, r.long - path.length));
        if (r.query !== null) path += `?${r.query}`;
        const lines = [`${r.method} ${path} HTTP/1.1`, `host: ${r.host}:${port}`, "connection: close"];
        for (const [name, value] of r.headers) lines.push(`${name}: ${value.trim()}`);
        if (r.bigHeader !== null) lines.push(`x-big: ${"b".repeat(r.bigHeader - 5)}`);
        if (r.upgrade)
          lines.push("upgrade: websocket", "sec-websocket-version: 13", "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==");
        const body = r.body ?? new Uint8Array(0);
        lines.push(`content-length: ${body.byteLength}`);
        const head = await rawHead(port, `${lines.join("\r\n")}\r\n\r\n`, body);
        const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
        if (!status) failures.push(`no status for ${lines[0]!.slice(0, 120)}`);
        else if (/x-burrow-error: relay-error/i.test(head)) failures.push(`relay-error for ${lines[0]!.slice(0, 120)}`);
      }),
      { numRuns: 200 },
    );
    expect(failures).toEqual([]);
    expect(await long).toMatchObject({ status: 200, length: size, sha256: patternHash(size) });
    expect((await visit(at(fuzzed.url, "/echo"))).status).toBe(200);
    expect(relay.output).not.toMatch(/relay error/);
    expect(`${fuzzed.output}\n${bystander.output}`).not.toMatch(/connection lost/);
  });

  it("ends every connection that sends random messages with a 4000-4999 close, or keeps it after a valid hello", async () => {
    const hello = (name: string): fc.Arbitrary<HelloFrame> =>
      fc.record({
        type: fc.constant(FrameType.Hello),
        version: fc.oneof(fc.constant(PROTOCOL_VERSION), fc.integer({ min: 0, max: 0xffff })),
        agent: fc.string({ maxLength: 64 }),
        name: fc.oneof(fc.constant(name), fc.string({ maxLength: 63 })),
        token: fc.string({ maxLength: 40 }),
        claim: fc.string({ maxLength: 128 }),
        rules: fc.constant<HelloFrame["rules"]>({ basicAuth: [], allowIp: [], webhooks: [] }),
        resume: fc.oneof(fc.constant(null), fc.record({ session: fc.string({ maxLength: 64 }), received: fc.nat() })),
      });
    const message = (name: string) =>
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        hello(name).map((h) => encodeFrame(h)),
        fc.tuple(hello(name), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()).map(([h, at, value, cut]) => {
          const bytes = encodeFrame(h).slice();
          if (cut) return bytes.subarray(0, Math.max(1, at % bytes.length));
          bytes[at % bytes.length] = value;
          return bytes;
        }),
      );
    const outcomes: string[] = [];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer().chain(() => {
          const name = `ws-${++n}`;
          return fc.tuple(fc.constant(name), message(name));
        }),
        async ([name, bytes]) => {
          const socket = new WebSocket(`ws://127.0.0.1:${relay.port}${CONNECT_PATH}?name=${name}`, {
            headers: { host: `localhost:${relay.port}` },
          });
          await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
          let ready = false;
          socket.on("message", (data, binary) => {
            if (!binary) return;
            try {
              ready ||= decodeFrames(new Uint8Array(data as Buffer)).some((f) => f.type === FrameType.Ready);
            } catch (error) {
              if (!(error instanceof ProtocolError)) throw error;
            }
          });
          const closed = new Promise<number>((resolve) => socket.once("close", (code) => resolve(code)));
          socket.send(bytes);
          const code = await Promise.race([closed, new Promise<undefined>((resolve) => setTimeout(resolve, 1500))]);
          if (code === undefined) {
            outcomes.push(ready ? "ready" : `open without hello: ${Buffer.from(bytes).toString("hex").slice(0, 80)}`);
            socket.close(1000);
            await closed;
          } else outcomes.push(code >= 4000 && code <= 4999 ? "closed 4xxx" : `closed ${code}`);
        },
      ),
      { numRuns: 60 },
    );
    // Every message is judged as a hello: Ready, or a refusal and a 4xxx close. (A connection
    // that sends nothing is closed by the hello deadline: security.test.ts.)
    const unexpected = outcomes.filter((o) => o !== "ready" && o !== "closed 4xxx");
    expect(unexpected).toEqual([]);
    expect((await visit(at(bystander.url, "/echo"))).status).toBe(200);
  });
});

type AckStep = [number, number | "all" | "late" | "never"];
const repeat = (count: number, step: AckStep): AckStep[] => Array.from({ length: count }, () => step);

describe("the relay under agents that acknowledge late, partly or never", () => {
  let relay: Relay;
  // A relay of 2 streams a tunnel, so that the bound is small: 18,560 frames.
  const limit = unackedLimit(2);

  beforeAll(async () => {
    relay = await Relay.start({ launcher: "workerd", vars: { MAX_STREAMS_PER_TUNNEL: "2" } });
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("closes an agent with 4006 exactly when it leaves more than the bound unacknowledged, and never before", async () => {
    // Each End of a stream that does not exist is answered with one Reset: after each message
    // the relay keeps (answers so far - the agent's last Ack) frames, which the test knows.
    const ack = fc.oneof(
      fc.constant("never" as const),
      fc.constant("all" as const),
      fc.constant("late" as const),
      fc.double({ min: 0, max: 1, noNaN: true }),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 4000 }), ack), { minLength: 1, maxLength: 12 }),
        async (steps) => {
          const agent = await RawAgent.hello(relay, `acks-${++n}`);
          let answers = 0;
          let before = 0;
          let acked = 0;
          let over = false;
          for (const [ends, how] of steps) {
            if (how === "all") acked = answers;
            else if (how === "late") acked = before;
            else if (how !== "never") acked += Math.floor((answers - acked) * how);
            before = answers;
            provoke(agent, ends, acked);
            answers += ends;
            over = answers - acked > limit.frames;
            if (over) break;
            expect(await receivedAll(agent, answers)).toBe(true);
          }
          if (over) {
            const { code, reason } = await agent.closed;
            expect(code).toBe(CloseCode.Unacknowledged);
            expect(reason).toContain(`frames unacknowledged, past the limit of ${limit.frames}`);
          } else {
            await new Promise((resolve) => setTimeout(resolve, 100));
            expect(agent.socket.readyState).toBe(WebSocket.OPEN);
            agent.socket.close(1000);
          }
        },
      ),
      {
        numRuns: 12,
        // Both outcomes, whatever the random runs draw: never acknowledging, and acknowledging
        // every message late, past the bound in all.
        examples: [[repeat(6, [4000, "never"])], [repeat(8, [4000, "late"])]],
      },
    );
  });
});
