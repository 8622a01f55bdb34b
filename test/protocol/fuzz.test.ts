import {
  decodeFrame,
  decodeFrames,
  decodeMessage,
  encodeFrame,
  type Frame,
  FrameType,
  MAX_DATA_CHUNK,
  MAX_HEADERS,
  MAX_STREAM_ID,
  ProtocolError,
} from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { harness, reset } from "./_session.ts";

/** No lone surrogates (String.prototype.isWellFormed, ES2024, above this lib). */
const wellFormed = (s: string) => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

// Grammar of the codec's guards (protocol/src/codec.ts), to build frames it accepts.
const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const token = (max: number) => fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: max });
const fieldValue = fc.string({
  unit: fc.oneof(
    fc.constantFrom("\t", " ", "\u00ff", "\u0080"),
    fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  ),
  maxLength: 64,
});
const path = fc
  .string({
    unit: fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0x80, max: 0xffff })).map(String.fromCharCode),
    maxLength: 64,
  })
  .map((rest) => `/${rest}`)
  // Lone surrogates do not survive UTF-8: msgpack writes U+FFFD, which is a different string.
  .filter(wellFormed);
const stream = fc.oneof(fc.constantFrom(0, 1, MAX_STREAM_ID), fc.integer({ min: 0, max: MAX_STREAM_ID }));
const headers = fc.array(fc.tuple(token(32), fieldValue), { maxLength: 8 });
// The largest chunk now and then: comparing 64 KiB arrays is what makes runs slow.
const bytes = fc.oneof(
  { arbitrary: fc.uint8Array({ maxLength: 256 }), weight: 50 },
  { arbitrary: fc.constant(new Uint8Array(MAX_DATA_CHUNK)), weight: 1 },
);
const text = (max: number) => fc.string({ maxLength: max }).filter(wellFormed);
const code = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/);
const rules = fc.record({
  basicAuth: fc.array(
    text(128).filter((s) => s.length > 0),
    { maxLength: 3 },
  ),
  allowIp: fc.array(
    text(64).filter((s) => s.length > 0),
    { maxLength: 3 },
  ),
  webhooks: fc.array(
    fc.record({
      kind: fc.constantFrom("github" as const, "hmac-sha256" as const),
      header: token(32).map((h) => h.toLowerCase()),
      secret: text(512).filter((s) => s.length > 0),
    }),
    { maxLength: 2 },
  ),
  connectKeys: fc.array(
    text(128).filter((s) => s.length > 0),
    { maxLength: 3 },
  ),
});

/** Every frame type, with edge values. */
const frame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    type: fc.constant(FrameType.Hello),
    version: fc.integer({ min: 0, max: 0xffff }),
    agent: text(64),
    name: text(63),
    token: text(512),
    claim: text(128),
    rules,
    resume: fc.oneof(fc.constant(null), fc.record({ session: text(64), received: fc.maxSafeNat() })),
    tcp: fc.boolean(),
    publicPort: fc.boolean(),
  }),
  fc.record({
    type: fc.constant(FrameType.Ready),
    name: text(63),
    url: text(2048),
    open: fc.boolean(),
    session: text(64),
    resumed: fc.boolean(),
    received: fc.maxSafeNat(),
    tcp: fc.boolean(),
    notice: text(1024),
  }),
  fc.record({
    type: fc.constant(FrameType.Connect),
    version: fc.integer({ min: 0, max: 0xffff }),
    client: text(64),
    name: text(63),
    key: text(512),
    resume: fc.oneof(fc.constant(null), fc.record({ session: text(64), received: fc.maxSafeNat() })),
  }),
  fc.record({ type: fc.constant(FrameType.Open), stream, from: text(64) }),
  fc.record({ type: fc.constant(FrameType.Ack), received: fc.maxSafeNat() }),
  fc.record({ type: fc.constant(FrameType.Refused), code, message: text(1024) }),
  fc.record({ type: fc.constant(FrameType.RequestHead), stream, method: token(64), path, headers }),
  fc.record({ type: fc.constant(FrameType.ResponseHead), stream, status: fc.integer({ min: 100, max: 599 }), headers }),
  fc.record({ type: fc.constant(FrameType.Data), stream, bytes }),
  fc.record({ type: fc.constant(FrameType.End), stream }),
  fc.record({ type: fc.constant(FrameType.Reset), stream, code, message: text(1024) }),
  fc.record({ type: fc.constant(FrameType.Credit), stream, bytes: fc.integer({ min: 1, max: 0x7fff_ffff }) }),
  fc.record({
    type: fc.constant(FrameType.WsMessage),
    stream,
    binary: fc.boolean(),
    final: fc.boolean(),
    bytes: fc.uint8Array({ maxLength: 256 }),
  }),
  fc.record({ type: fc.constant(FrameType.WsClose), stream, code: fc.integer({ min: 1000, max: 4999 }), reason: text(123) }),
) as fc.Arbitrary<Frame>;

/** Runs `decode`, and fails on anything it throws but a ProtocolError. */
function onlyProtocolErrors(decode: () => unknown): void {
  try {
    decode();
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
  }
}

/** A valid frame's bytes, cut short, with bytes flipped, or with bytes spliced in. */
const mutated = fc
  .tuple(frame, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat(), fc.boolean())
  .map(([f, flips, cut, truncate]) => {
    const out = encodeFrame(f).slice();
    for (const [at, value] of flips) if (out.length > 0) out[at % out.length] = value;
    return truncate ? out.subarray(0, cut % (out.length + 1)) : out;
  });

const RUNS = { numRuns: 3000 };

describe("codec under fuzzing", () => {
  it("round-trips every valid frame through encodeFrame and decodeFrame", () => {
    fc.assert(
      fc.property(frame, (f) => {
        const back = decodeFrame(encodeFrame(f));
        // Byte fields compared as buffers (fast), the rest structurally.
        if (f.type === FrameType.Data || f.type === FrameType.WsMessage) {
          const { bytes: got, ...rest } = back as typeof f;
          expect(Buffer.from(got).equals(Buffer.from(f.bytes))).toBe(true);
          expect({ ...rest, bytes: f.bytes }).toEqual(f);
        } else expect(back).toEqual(f);
      }),
      RUNS,
    );
  });

  it("throws nothing but ProtocolError on random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (b) => {
        onlyProtocolErrors(() => decodeFrame(b));
        onlyProtocolErrors(() => decodeFrames(b));
        onlyProtocolErrors(() => decodeMessage(b));
      }),
      RUNS,
    );
  });

  it("throws nothing but ProtocolError on truncated and mutated valid frames", () => {
    fc.assert(
      fc.property(mutated, (b) => {
        onlyProtocolErrors(() => decodeFrame(b));
        onlyProtocolErrors(() => decodeFrames(b));
        onlyProtocolErrors(() => decodeMessage(b));
      }),
      RUNS,
    );
  });

  it("throws nothing but ProtocolError on well-formed msgpack of the wrong shape", () => {
    const anything = fc.oneof(fc.anything(), fc.uint8Array({ maxLength: 16 }));
    const shaped = fc.oneof(
      fc.tuple(fc.integer({ min: -1, max: 20 }), stream, anything, anything, anything),
      fc.array(anything, { maxLength: 8 }),
      fc.tuple(fc.constant(FrameType.RequestHead), stream, token(64), path, fc.array(anything, { maxLength: MAX_HEADERS + 2 })),
    );
    fc.assert(
      fc.property(shaped, (value) => {
        const b = encode(value);
        onlyProtocolErrors(() => decodeFrame(b));
        onlyProtocolErrors(() => decodeMessage(b));
      }),
      RUNS,
    );
  });

  it("decodeMessage reports an InvalidFrame only for the stream of the frame at fault", () => {
    // A batch of valid frames around one stream frame whose other fields break the protocol.
    const broken = fc.tuple(stream, fc.constantFrom("status", "path", "header", "credit")).map(([s, fault]) => {
      switch (fault) {
        case "status":
          return { stream: s, bytes: encode([FrameType.ResponseHead, s, 999, []]) };
        case "path":
          return { stream: s, bytes: encode([FrameType.RequestHead, s, "GET", "no-slash", []]) };
        case "header":
          return { stream: s, bytes: encode([FrameType.RequestHead, s, "GET", "/", [["bad name", "x"]]]) };
        default:
          return { stream: s, bytes: encode([FrameType.Credit, s, 0]) };
      }
    });
    const good = fc.array(
      frame.filter(
        (f) =>
          f.type !== FrameType.Hello &&
          f.type !== FrameType.Ready &&
          f.type !== FrameType.Refused &&
          f.type !== FrameType.Connect,
      ),
      {
        maxLength: 4,
      },
    );
    fc.assert(
      fc.property(good, broken, good, (before, bad, after) => {
        const parts = [...before.map(encodeFrame), bad.bytes, ...after.map(encodeFrame)];
        const message = new Uint8Array(parts.reduce((sum, p) => sum + p.byteLength, 0));
        let offset = 0;
        for (const p of parts) {
          message.set(p, offset);
          offset += p.byteLength;
        }
        const frames = decodeMessage(message);
        expect(frames).toHaveLength(before.length + 1 + after.length);
        const invalid = frames.filter((f) => f.type === "invalid");
        expect(invalid).toHaveLength(1);
        expect(invalid[0]).toMatchObject({ stream: bad.stream, error: expect.any(ProtocolError) });
        expect(frames.indexOf(invalid[0]!)).toBe(before.length);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("the session's bound under fuzzing", () => {
  /** Frames of all sizes a side sends: answers, heads, body chunks. */
  const sent = fc.oneof(
    fc.nat({ max: 1000 }).map((stream) => reset(stream)),
    fc.record({ type: fc.constant(FrameType.End), stream: fc.nat({ max: 1000 }) }),
    fc.uint8Array({ maxLength: 2048 }).map((data): Frame => ({ type: FrameType.Data, stream: 1, bytes: data })),
  ) as fc.Arbitrary<Frame>;
  /** How a peer acknowledges after each message: never, all it got, or some of it (late). */
  const ack = fc.oneof(fc.constant("never" as const), fc.constant("all" as const), fc.double({ min: 0, max: 1, noNaN: true }));

  it("never keeps more than the bound for a peer that acknowledges late, partly or never, and lets go of it all past the bound", () => {
    fc.assert(
      fc.property(
        fc.record({ bytes: fc.integer({ min: 2000, max: 40_000 }), frames: fc.integer({ min: 5, max: 200 }) }),
        fc.array(fc.tuple(fc.array(sent, { minLength: 1, maxLength: 30 }), ack), { maxLength: 40 }),
        (limit, steps) => {
          const { session, messages, overflows, flush } = harness(limit);
          let received = 0;
          let acked = 0;
          for (const [frames, how] of steps) {
            for (const frame of frames) session.push(frame);
            flush();
            received = messages.reduce((sum, message) => sum + decodeMessage(message).length, 0);
            if (how === "all") acked = received;
            else if (how !== "never") acked += Math.floor((received - acked) * how);
            session.acknowledge(acked);
            if (session.ended) {
              expect(session.keptBytes).toBe(0);
              expect(session.keptFrames).toBe(0);
              expect(overflows).toHaveLength(1);
            } else {
              expect(session.keptBytes).toBeLessThanOrEqual(limit.bytes);
              expect(session.keptFrames).toBeLessThanOrEqual(limit.frames);
              expect(overflows).toEqual([]);
            }
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("never ends the session of a peer that acknowledges late but within the bound", () => {
    // The peer acknowledges all but its last `lag` messages before each new one: what is kept is
    // then at most lag + 1 messages, which the bound is made to hold.
    const most = { frames: 30, bytes: 30 * (2048 + 16) };
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 6 }),
        fc.array(fc.array(sent, { minLength: 1, maxLength: most.frames }), { maxLength: 60 }),
        (lag, steps) => {
          const limit = { frames: (lag + 1) * most.frames, bytes: (lag + 1) * most.bytes };
          const { session, messages, overflows, flush } = harness(limit);
          for (const frames of steps) {
            const got = messages.slice(0, Math.max(0, messages.length - lag));
            session.acknowledge(got.reduce((sum, message) => sum + decodeMessage(message).length, 0));
            for (const frame of frames) session.push(frame);
            flush();
          }
          expect(overflows).toEqual([]);
          expect(session.ended).toBe(false);
        },
      ),
      { numRuns: 500 },
    );
  });
});
