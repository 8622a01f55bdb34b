import {
  BATCH_FLUSH_BYTES,
  concatBytes,
  decodeFrame,
  decodeFrames,
  decodeMessage,
  decodePollAnswer,
  encodeFrame,
  encodePollAnswer,
  type Frame,
  FrameBatch,
  FrameType,
  MAX_DATA_CHUNK,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  MAX_HEADERS,
  ProtocolError,
} from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { describe, expect, it } from "vitest";

const FRAMES: Frame[] = [
  {
    type: FrameType.Hello,
    version: 2,
    agent: "0.1.0",
    name: "demo",
    token: "",
    claim: "c2VjcmV0",
    resume: { session: "c2Vzc2lvbg", received: 7 },
    rules: {
      basicAuth: ["ab".repeat(32)],
      allowIp: ["10.0.0.0/8", "::1"],
      webhooks: [{ kind: "github", header: "x-hub-signature-256", secret: "s" }],
      connectKeys: [],
    },
    tcp: false,
    publicPort: false,
  },
  {
    type: FrameType.Hello,
    version: 2,
    agent: "0.1.0",
    name: "devbox",
    token: "",
    claim: "c2VjcmV0",
    resume: null,
    rules: { basicAuth: [], allowIp: ["10.0.0.0/8"], webhooks: [], connectKeys: ["cd".repeat(32)] },
    tcp: true,
    publicPort: true,
  },
  { type: FrameType.Connect, version: 2, client: "0.1.0", name: "devbox", key: "k".repeat(32), resume: null },
  { type: FrameType.Connect, version: 2, client: "0.1.0", name: "devbox", key: "", resume: { session: "s", received: 3 } },
  { type: FrameType.Open, stream: 7, from: "203.0.113.9" },
  {
    type: FrameType.Ready,
    name: "demo",
    url: "https://demo.example.com",
    open: true,
    session: "c2Vzc2lvbg",
    resumed: true,
    received: 2 ** 40,
    tcp: false,
    notice: "",
  },
  {
    type: FrameType.Ready,
    name: "devbox",
    url: "tcp://relay.example.com:20001",
    open: false,
    session: "c2Vzc2lvbg",
    resumed: false,
    received: 0,
    tcp: true,
    notice: "no public TCP port is free on this relay",
  },
  { type: FrameType.Refused, code: "name-taken", message: 'the tunnel name "demo" is in use' },
  {
    type: FrameType.RequestHead,
    stream: 7,
    method: "POST",
    path: "/a/b?c=d&e=%20",
    headers: [
      ["content-type", "text/plain"],
      ["cookie", "a=1"],
      ["cookie", "b=2"],
    ],
  },
  {
    type: FrameType.ResponseHead,
    stream: 0xffff_ffff,
    status: 302,
    headers: [
      ["set-cookie", "a=1"],
      ["set-cookie", "b=2"],
      ["location", "/x"],
    ],
  },
  { type: FrameType.Data, stream: 1, bytes: new Uint8Array([0, 1, 2, 255]) },
  { type: FrameType.Data, stream: 2, bytes: new Uint8Array(MAX_DATA_CHUNK).fill(9) },
  { type: FrameType.Data, stream: 3, bytes: new Uint8Array(0) },
  { type: FrameType.End, stream: 9 },
  {
    type: FrameType.Reset,
    stream: 9,
    code: "origin-unreachable",
    message: "the local server at http://localhost:8000 is not answering",
  },
  { type: FrameType.Credit, stream: 9, bytes: 262_144 },
  { type: FrameType.WsMessage, stream: 4, binary: false, final: true, bytes: new TextEncoder().encode("héllo") },
  { type: FrameType.WsMessage, stream: 4, binary: true, final: false, bytes: new Uint8Array(MAX_DATA_CHUNK) },
  { type: FrameType.WsClose, stream: 4, code: 4001, reason: "bye" },
  { type: FrameType.Ack, received: 123_456 },
];

function malformedMessage(bytes: Uint8Array): string {
  try {
    decodeFrame(bytes);
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
    return `${(error as ProtocolError).code}: ${(error as ProtocolError).message}`;
  }
  throw new Error("decoded without error");
}

describe("frame codec", () => {
  it.each(FRAMES.map((frame) => [Object.entries(FrameType).find(([, v]) => v === frame.type)![0], frame] as const))(
    "round-trips a %s frame",
    (_, frame) => {
      expect(decodeFrame(encodeFrame(frame))).toEqual(frame);
    },
  );

  it("writes Data frames as the msgpack any decoder reads", () => {
    const bytes = new Uint8Array([1, 2, 3]);
    expect(decodeFrame(encode([FrameType.Data, 5, bytes]))).toEqual({ type: FrameType.Data, stream: 5, bytes });
    expect(encodeFrame({ type: FrameType.Data, stream: 5, bytes }).byteLength).toBe(12 + 3);
  });

  it("ignores frame types it does not know, with any fields", () => {
    expect(decodeFrame(encode([200, "future", { field: 1 }]))).toBeUndefined();
  });

  it("ignores extra trailing fields a newer peer appends", () => {
    expect(decodeFrame(encode([FrameType.End, 4, "new field"]))).toEqual({ type: FrameType.End, stream: 4 });
  });

  it("reads a Ready from a relay that predates TCP tunnels and notices", () => {
    expect(decodeFrame(encode([FrameType.Ready, "demo", "https://demo.example.com", false, "s", false, 0]))).toMatchObject({
      tcp: false,
      notice: "",
    });
  });

  it("refuses to encode a body chunk over the limit, naming it", () => {
    expect(() => encodeFrame({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(MAX_DATA_CHUNK + 1) })).toThrow(
      `body chunk is ${MAX_DATA_CHUNK + 1} bytes; the limit is ${MAX_DATA_CHUNK}`,
    );
  });

  it.each([
    ["an empty message", new Uint8Array(0), /malformed-frame: frame is not valid msgpack/],
    ["a truncated frame", encodeFrame(FRAMES[3]!).subarray(0, 20), /malformed-frame: frame is not valid msgpack/],
    [
      "trailing bytes",
      new Uint8Array([...encodeFrame({ type: FrameType.End, stream: 1 }), 0]),
      /malformed-frame: frame is not valid msgpack/,
    ],
    ["a map instead of an array", encode({ type: 6 }), /malformed-frame: frame is not a msgpack array/],
    ["a string type", encode(["6", 1]), /frame type is "6", not an integer/],
    ["a missing field", encode([FrameType.Reset, 1, "cancelled"]), /Reset frame has no message/],
    ["a negative stream", encode([FrameType.End, -1]), /End frame stream is -1; expected an integer from 0 to 4294967295/],
    ["a fractional stream", encode([FrameType.End, 1.5]), /End frame stream is 1.5/],
    [
      "a status out of range",
      encode([FrameType.ResponseHead, 1, 99, []]),
      /ResponseHead frame status is 99; expected an integer from 100 to 599/,
    ],
    ["text where bytes belong", encode([FrameType.Data, 1, "abc"]), /Data frame bytes is "abc", not binary/],
    ["an oversize body chunk", encode([FrameType.Data, 1, new Uint8Array(MAX_DATA_CHUNK + 1)]), /malformed-frame: .*max length/i],
    [
      "an absolute URL as path",
      encode([FrameType.RequestHead, 1, "GET", "http://evil.example/", []]),
      /path "http:\/\/evil.example\/" must start with "\/"/,
    ],
    ["a path with a space", encode([FrameType.RequestHead, 1, "GET", "/a b", []]), /must start with "\/" and hold no spaces/],
    ["a method that is not a token", encode([FrameType.RequestHead, 1, "GE T", "/", []]), /method "GE T" is not an HTTP token/],
    [
      "a header with a newline",
      encode([FrameType.ResponseHead, 1, 200, [["x-a", "1\r\nx-b: 2"]]]),
      /header x-a holds a control character/,
    ],
    [
      "a header name with a colon",
      encode([FrameType.ResponseHead, 1, 200, [["x:a", "1"]]]),
      /header name "x:a" is not an HTTP token/,
    ],
    [
      "a header that is not a pair",
      encode([FrameType.ResponseHead, 1, 200, [["x-a"]]]),
      /header 0 is not a \[name, value\] pair/,
    ],
    ["a __proto__ key", new Uint8Array([0x81, 0xa9, ...new TextEncoder().encode("__proto__"), 0x01]), /malformed-frame/],
    ["zero credit", encode([FrameType.Credit, 1, 0]), /Credit frame bytes is 0; expected an integer from 1/],
    [
      "an oversize notice",
      encode([FrameType.Ready, "demo", "tcp://relay:20001", false, "s", false, 0, true, "n".repeat(1025)]),
      /Ready frame notice is 1025 characters; the limit is 1024/,
    ],
    [
      "a close code out of range",
      encode([FrameType.WsClose, 1, 999, ""]),
      /WsClose frame code is 999; expected an integer from 1000/,
    ],
    [
      "a non-boolean final flag",
      encode([FrameType.WsMessage, 1, true, 1, new Uint8Array(1)]),
      /WsMessage frame final is 1, not a boolean/,
    ],
    [
      "a reset code that is not a word",
      encode([FrameType.Reset, 1, "Not A Code!", "x"]),
      /code "Not A Code!" is not a lowercase-hyphenated word/,
    ],
    // TCP tunnels' frames and fields.
    [
      "a Connect with a key of 513 characters",
      encode([FrameType.Connect, 2, "0.1.0", "devbox", "k".repeat(513), null]),
      /^malformed-frame: Connect frame key is 513 characters; the limit is 512$/,
    ],
    [
      "a Connect with a name of 64 characters",
      encode([FrameType.Connect, 2, "0.1.0", "d".repeat(64), "", null]),
      /Connect frame name is 64 characters; the limit is 63/,
    ],
    [
      "a Connect whose version is text",
      encode([FrameType.Connect, "2", "0.1.0", "devbox", "", null]),
      /Connect frame version is "2"; expected an integer from 0 to 65535/,
    ],
    [
      "a Connect whose key is a number",
      encode([FrameType.Connect, 2, "0.1.0", "devbox", 7, null]),
      /Connect frame key is 7, not a string/,
    ],
    ["a Connect without its resume", encode([FrameType.Connect, 2, "0.1.0", "devbox", ""]), /Connect frame has no resume/],
    [
      "a Connect whose resume is not a pair",
      encode([FrameType.Connect, 2, "0.1.0", "devbox", "", ["session"]]),
      /Connect frame resume is .*not \[session, received\]/,
    ],
    [
      "a Connect resuming at a negative count",
      encode([FrameType.Connect, 2, "0.1.0", "devbox", "", ["session", -1]]),
      /Connect frame resume.received is -1; expected an integer from 0/,
    ],
    ["an Open with a non-integer stream", encode([FrameType.Open, 1.5, ""]), /Open frame stream is 1.5; expected an integer/],
    ["an Open with a text stream", encode([FrameType.Open, "1", ""]), /Open frame stream is "1"; expected an integer/],
    ["an Open without its address", encode([FrameType.Open, 1]), /Open frame has no from/],
    ["an Open whose address is not text", encode([FrameType.Open, 1, 7]), /Open frame from is 7, not a string/],
    [
      "an Open with an address of 65 characters",
      encode([FrameType.Open, 1, "1".repeat(65)]),
      /Open frame from is 65 characters; the limit is 64/,
    ],
    [
      "a Hello whose tcp is not a boolean",
      encode([FrameType.Hello, 2, "0.1.0", "devbox", "", "c2VjcmV0", [[], [], [], []], null, "yes"]),
      /Hello frame tcp is "yes", not a boolean/,
    ],
    [
      "a Hello with a connect key hash of 129 characters",
      encode([FrameType.Hello, 2, "0.1.0", "devbox", "", "c2VjcmV0", [[], [], [], ["a".repeat(129)]], null, true]),
      /Hello frame rules.connectKeys entry is .*expected a string of 1 to 128 characters/,
    ],
    [
      "a Hello whose connect keys are not a list",
      encode([FrameType.Hello, 2, "0.1.0", "devbox", "", "c2VjcmV0", [[], [], [], "key"], null, true]),
      /Hello frame rules.connectKeys is "key", not an array/,
    ],
    [
      "a Ready whose tcp is not a boolean",
      encode([FrameType.Ready, "devbox", "", false, "s", false, 0, 1]),
      /Ready frame tcp is 1, not a boolean/,
    ],
  ])("rejects %s with a typed error naming the fault", (_, bytes, expected) => {
    expect(malformedMessage(bytes)).toMatch(expected);
  });

  it("reads a Hello and a Ready from before TCP tunnels as tcp: false, with no connect keys", () => {
    const hello = decodeFrame(encode([FrameType.Hello, 2, "0.1.0", "web", "", "c2VjcmV0", [[], ["10.0.0.0/8"], []], null]));
    expect(hello).toMatchObject({ type: FrameType.Hello, tcp: false, rules: { allowIp: ["10.0.0.0/8"], connectKeys: [] } });
    const ready = decodeFrame(encode([FrameType.Ready, "web", "https://web.example.com", true, "s", false, 0]));
    expect(ready).toMatchObject({ type: FrameType.Ready, tcp: false });
  });

  it("marks a bad Open as its stream's problem, so that the connection goes on", () => {
    const frames = decodeMessage(
      concatBytes(
        [encode([FrameType.Open, 3, 7]), encodeFrame({ type: FrameType.Open, stream: 4, from: "" })],
        encode([FrameType.Open, 3, 7]).byteLength + encodeFrame({ type: FrameType.Open, stream: 4, from: "" }).byteLength,
      ),
    );
    expect(frames).toEqual([
      expect.objectContaining({ type: "invalid", stream: 3 }),
      { type: FrameType.Open, stream: 4, from: "" },
    ]);
  });

  it("rejects a message over the frame limit before decoding it", () => {
    expect(malformedMessage(new Uint8Array(MAX_FRAME_BYTES + 1))).toBe(
      `frame-too-large: frame is ${MAX_FRAME_BYTES + 1} bytes; the limit is ${MAX_FRAME_BYTES}`,
    );
  });

  it("never throws anything but ProtocolError on random or mutated input", () => {
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const encoded = FRAMES.map(encodeFrame);
    for (let i = 0; i < 20_000; i++) {
      let bytes: Uint8Array;
      if (i % 2 === 0) {
        bytes = Uint8Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256));
      } else {
        bytes = encoded[i % encoded.length]!.slice(0, 200);
        for (let flips = 1 + Math.floor(random() * 4); flips > 0; flips--) {
          bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
        }
      }
      try {
        decodeFrame(bytes);
      } catch (error) {
        if (!(error instanceof ProtocolError)) throw new Error(`input ${Buffer.from(bytes).toString("hex")} threw ${error}`);
      }
    }
  });
});

describe("frames batched into one message", () => {
  it("decodes several frames back to back, in order, skipping unknown types", () => {
    const parts = [encodeFrame(FRAMES[4]!), encode([200, "future"]), encodeFrame(FRAMES[5]!), encodeFrame(FRAMES[8]!)];
    const message = new Uint8Array(parts.reduce((sum, p) => sum + p.byteLength, 0));
    let offset = 0;
    for (const part of parts) {
      message.set(part, offset);
      offset += part.byteLength;
    }
    expect(decodeFrames(message)).toEqual([FRAMES[4], FRAMES[5], FRAMES[8]]);
  });

  it("rejects a batch with a bad frame in it, naming the fault", () => {
    const message = new Uint8Array([...encodeFrame({ type: FrameType.End, stream: 1 }), ...encode([FrameType.End, -1])]);
    expect(() => decodeFrames(message)).toThrow(/End frame stream is -1/);
    expect(() => decodeFrames(new Uint8Array(0))).toThrow(ProtocolError);
  });

  it("marks a frame over a limit as its stream's problem, in order, and keeps the others", () => {
    const big = "x".repeat(MAX_HEADER_BYTES + 1);
    const many = Array.from({ length: MAX_HEADERS + 1 }, (_, i) => [`h${i}`, "v"]);
    const parts = [
      encodeFrame({ type: FrameType.End, stream: 1 }),
      encode([FrameType.RequestHead, 2, "GET", "/", [["cookie", big]]]),
      encode([FrameType.RequestHead, 3, "GET", `/${big}`, []]),
      encode([FrameType.ResponseHead, 4, 200, many]),
      encodeFrame({ type: FrameType.End, stream: 5 }),
    ];
    const message = concatBytes(
      parts,
      parts.reduce((sum, p) => sum + p.byteLength, 0),
    );
    const frames = decodeMessage(message);
    expect(frames.map((f) => [f.type, "stream" in f ? f.stream : undefined])).toEqual([
      [FrameType.End, 1],
      ["invalid", 2],
      ["invalid", 3],
      ["invalid", 4],
      [FrameType.End, 5],
    ]);
    const messages = frames.flatMap((f) => (f.type === "invalid" ? [f.error.message] : []));
    expect(messages[0]).toMatch(/header "cookie" is 32775 characters; the limit is 32768/);
    expect(messages[1]).toMatch(/path .* must start|path is 32770 characters; the limit is 32768/);
    expect(messages[2]).toMatch(/has 257 header fields; the limit is 256/);
    // The strict form still refuses the whole message, and a bad frame without a stream always does.
    expect(() => decodeFrames(message)).toThrow(/limit is 32768/);
    expect(() => decodeMessage(encode([FrameType.Hello, "two"]))).toThrow(/Hello frame version/);
  });

  it("sends the frames of one turn as one message, and a full batch at once", async () => {
    const sent: Uint8Array[] = [];
    const batch = new FrameBatch(
      (parts, size) => sent.push(concatBytes(parts, size)),
      (flush) => queueMicrotask(flush),
    );
    batch.push({ type: FrameType.ResponseHead, stream: 1, status: 200, headers: [] });
    batch.push({ type: FrameType.Data, stream: 1, bytes: new Uint8Array([1, 2, 3]) });
    batch.push({ type: FrameType.End, stream: 1 });
    expect(sent).toHaveLength(0);
    await Promise.resolve();
    expect(sent).toHaveLength(1);
    expect(decodeFrames(sent[0]!).map((f) => f.type)).toEqual([FrameType.ResponseHead, FrameType.Data, FrameType.End]);
    // A Data frame's payload travels as its own part, and decodes as the same bytes.
    expect(decodeFrames(sent[0]!)[1]).toEqual({ type: FrameType.Data, stream: 1, bytes: new Uint8Array([1, 2, 3]) });
    expect(() => batch.push({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(MAX_DATA_CHUNK + 1) })).toThrow(
      ProtocolError,
    );
    // Bulk data leaves once a batch holds BATCH_FLUSH_BYTES, without waiting for the turn's end.
    const chunks = Math.ceil(BATCH_FLUSH_BYTES / MAX_DATA_CHUNK);
    for (let i = 0; i < chunks - 1; i++) batch.push({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(MAX_DATA_CHUNK) });
    expect(sent).toHaveLength(1);
    batch.push({ type: FrameType.Data, stream: 1, bytes: new Uint8Array(MAX_DATA_CHUNK) });
    expect(sent).toHaveLength(2);
    expect(decodeFrames(sent[1]!)).toHaveLength(chunks);
  });
});

describe("poll answers (HTTPS transport)", () => {
  it("round-trip a batch with frames and one that closes the session", () => {
    const frames = encodeFrame({ type: FrameType.End, stream: 3 });
    expect(decodePollAnswer(encodePollAnswer({ seq: 7, close: undefined, frames }))).toEqual({
      seq: 7,
      close: undefined,
      frames,
    });
    const closing = decodePollAnswer(encodePollAnswer({ seq: 8, close: { code: 4001, reason: "replaced – newer" }, frames }));
    expect(closing.close).toEqual({ code: 4001, reason: "replaced – newer" });
    expect(decodeFrames(closing.frames)).toEqual([{ type: FrameType.End, stream: 3 }]);
  });

  it("reject a truncated answer with a ProtocolError", () => {
    expect(() => decodePollAnswer(new Uint8Array(5))).toThrow(ProtocolError);
    const answer = encodePollAnswer({ seq: 1, close: { code: 1000, reason: "bye" }, frames: new Uint8Array(0) });
    expect(() => decodePollAnswer(answer.subarray(0, 9))).toThrow(/ends inside its close reason/);
  });
});
