import { Decoder, Encoder } from "@msgpack/msgpack";
import { malformed, ProtocolError } from "./errors.ts";
import {
  type Frame,
  FrameType,
  type HeaderList,
  type RefusalCode,
  type ResetCode,
  type VisitorRules,
  type WebhookRule,
} from "./frames.ts";
import {
  MAX_DATA_CHUNK,
  MAX_FRAME_BYTES,
  MAX_HEADER_BYTES,
  MAX_HEADERS,
  MAX_MESSAGE_BYTES,
  MAX_MESSAGE_LENGTH,
  MAX_RULES,
  MAX_STREAM_ID,
} from "./limits.ts";

// A frame on the wire is one msgpack array: [type, ...fields in the order of the interface].
// Arrays rather than maps keep Data frames at a 12-byte overhead; fields are only ever appended,
// and receivers ignore extra trailing elements.

const encoder = new Encoder();
// The decoder's own limits only bound what one message can make it allocate; the protocol's
// limits (MAX_HEADER_BYTES, MAX_HEADERS...) are checked per frame by the guards below, so that
// a frame over them is that frame's stream's problem (it is reset), not the whole connection's.
const decoder = new Decoder({
  maxStrLength: MAX_FRAME_BYTES,
  maxBinLength: MAX_DATA_CHUNK,
  maxArrayLength: 4 * MAX_HEADERS,
  maxMapLength: 64,
  maxExtLength: 64,
});

/**
 * A frame of a known type for a readable stream whose other fields broke the protocol (a
 * header over MAX_HEADER_BYTES, say): the receiver resets that stream and keeps the connection.
 */
export interface InvalidFrame {
  type: "invalid";
  stream: number;
  error: ProtocolError;
}

/**
 * Encodes one frame as a binary WebSocket message.
 * @throws {ProtocolError} "frame-too-large" when a Data frame carries more than MAX_DATA_CHUNK bytes.
 */
export function encodeFrame(frame: Frame): Uint8Array {
  switch (frame.type) {
    case FrameType.Hello:
      return encoder.encode([
        frame.type,
        frame.version,
        frame.agent,
        frame.name,
        frame.token,
        frame.claim,
        [
          frame.rules.basicAuth,
          frame.rules.allowIp,
          frame.rules.webhooks.map((w) => [w.kind, w.header, w.secret]),
          frame.rules.connectKeys ?? [],
        ],
        frame.resume ? [frame.resume.session, frame.resume.received] : null,
        frame.tcp ?? false,
        frame.publicPort ?? false,
      ]);
    case FrameType.Ready:
      return encoder.encode([
        frame.type,
        frame.name,
        frame.url,
        frame.open,
        frame.session,
        frame.resumed,
        frame.received,
        frame.tcp ?? false,
        frame.notice ?? "",
      ]);
    case FrameType.Connect:
      return encoder.encode([
        frame.type,
        frame.version,
        frame.client,
        frame.name,
        frame.key,
        frame.resume ? [frame.resume.session, frame.resume.received] : null,
      ]);
    case FrameType.Open:
      return encoder.encode([frame.type, frame.stream, frame.from]);
    case FrameType.Ack:
      return encoder.encode([frame.type, frame.received]);
    case FrameType.Refused:
      return encoder.encode([frame.type, frame.code, frame.message]);
    case FrameType.RequestHead:
      return encoder.encode([frame.type, frame.stream, frame.method, frame.path, frame.headers]);
    case FrameType.ResponseHead:
      return encoder.encode([frame.type, frame.stream, frame.status, frame.headers]);
    case FrameType.Data:
      return encodeData(frame.stream, frame.bytes);
    case FrameType.End:
      return encoder.encode([frame.type, frame.stream]);
    case FrameType.Reset:
      return encoder.encode([frame.type, frame.stream, frame.code, frame.message]);
    case FrameType.Credit:
      return encoder.encode([frame.type, frame.stream, frame.bytes]);
    case FrameType.WsMessage:
      if (frame.bytes.byteLength > MAX_DATA_CHUNK) {
        throw new ProtocolError(
          "frame-too-large",
          `message piece is ${frame.bytes.byteLength} bytes; the limit is ${MAX_DATA_CHUNK}`,
        );
      }
      return encoder.encode([frame.type, frame.stream, frame.binary, frame.final, frame.bytes]);
    case FrameType.WsClose:
      return encoder.encode([frame.type, frame.stream, frame.code, frame.reason]);
  }
}

/**
 * The 12 bytes that precede a Data frame's payload: msgpack `[Data, stream, bin32 length]`.
 * The payload follows as is, so a sender can pass it on without copying (see FrameBatch).
 * @throws {ProtocolError} "frame-too-large" when `length` exceeds MAX_DATA_CHUNK.
 */
export function encodeDataHeader(stream: number, length: number): Uint8Array {
  if (length > MAX_DATA_CHUNK) {
    throw new ProtocolError("frame-too-large", `body chunk is ${length} bytes; the limit is ${MAX_DATA_CHUNK}`);
  }
  // Byte by byte: a DataView would need `out.buffer`, which makes V8 move the small array's
  // bytes off its heap (1.6 ms of the agent's CPU per 16 MiB download, bench/profile.ts).
  const out = new Uint8Array(DATA_HEADER_BYTES);
  out[0] = 0x93; // fixarray of 3
  out[1] = FrameType.Data; // positive fixint
  out[2] = 0xce; // uint 32, big-endian
  out[3] = stream >>> 24;
  out[4] = stream >>> 16;
  out[5] = stream >>> 8;
  out[6] = stream;
  out[7] = 0xc6; // bin 32, big-endian
  out[8] = length >>> 24;
  out[9] = length >>> 16;
  out[10] = length >>> 8;
  out[11] = length;
  return out;
}

const DATA_HEADER_BYTES = 12;

/** A whole Data frame in one buffer: its header, then one copy of the payload. */
function encodeData(stream: number, bytes: Uint8Array): Uint8Array {
  const header = encodeDataHeader(stream, bytes.byteLength);
  const out = new Uint8Array(DATA_HEADER_BYTES + bytes.byteLength);
  out.set(header);
  out.set(bytes, DATA_HEADER_BYTES);
  return out;
}

/**
 * Decodes one binary WebSocket message.
 * Byte fields of the result are views into `bytes`: copy them before reusing the buffer.
 * @returns the frame, or undefined for a frame type this version does not know (ignore it).
 * @throws {ProtocolError} "frame-too-large" when the message exceeds MAX_FRAME_BYTES,
 *   "malformed-frame" when it is not msgpack or a field is missing, mistyped or out of range.
 */
export function decodeFrame(bytes: Uint8Array): Frame | undefined {
  if (bytes.byteLength > MAX_FRAME_BYTES) {
    throw new ProtocolError("frame-too-large", `frame is ${bytes.byteLength} bytes; the limit is ${MAX_FRAME_BYTES}`);
  }
  let value: unknown;
  try {
    value = decoder.decode(bytes);
  } catch (error) {
    // DecodeError for bad bytes, RangeError for truncated input or trailing bytes.
    malformed(`frame is not valid msgpack: ${(error as Error).message}`);
  }
  return checkFrame(value);
}

/**
 * Decodes one binary WebSocket message holding one or more frames back to back (see
 * {@link FrameBatch}). Frames of unknown types are left out.
 * @throws {ProtocolError} "frame-too-large" when the message exceeds MAX_MESSAGE_BYTES,
 *   "malformed-frame" as {@link decodeFrame} does, for the first bad frame.
 */
export function decodeFrames(bytes: Uint8Array): Frame[] {
  const frames: Frame[] = [];
  for (const value of decodeValues(bytes)) {
    const frame = checkFrame(value);
    if (frame) frames.push(frame);
  }
  return frames;
}

/**
 * Decodes one message as {@link decodeFrames} does, but a frame that names a readable stream and
 * breaks the protocol in its other fields comes out in its place as an {@link InvalidFrame}, so
 * that the receiver resets that one stream, in order with the frames around it. `counted.frames`
 * is set to the number of frames in the message, whatever their types.
 * @throws {ProtocolError} for a message that is not msgpack, too large, or holds a bad frame
 *   that names no stream (a Hello, say).
 */
export function decodeMessage(bytes: Uint8Array, counted?: { frames: number }): (Frame | InvalidFrame)[] {
  const frames: (Frame | InvalidFrame)[] = [];
  const values = decodeValues(bytes);
  // Every frame counts for a session (see FrameSession), those of unknown types too.
  if (counted) counted.frames = values.length;
  for (const value of values) {
    try {
      const frame = checkFrame(value);
      if (frame) frames.push(frame);
    } catch (error) {
      if (!(error instanceof ProtocolError) || error.stream === undefined) throw error;
      frames.push({ type: "invalid", stream: error.stream, error });
    }
  }
  return frames;
}

function decodeValues(bytes: Uint8Array): unknown[] {
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    throw new ProtocolError("frame-too-large", `message is ${bytes.byteLength} bytes; the limit is ${MAX_MESSAGE_BYTES}`);
  }
  const values: unknown[] = [];
  try {
    for (const value of decoder.decodeMulti(bytes)) values.push(value);
  } catch (error) {
    malformed(`frame is not valid msgpack: ${(error as Error).message}`);
  }
  if (values.length === 0) malformed("message holds no frame");
  return values;
}

/** Frame types that carry a stream id in field 1. */
const STREAM_FRAMES: ReadonlySet<number> = new Set([
  FrameType.RequestHead,
  FrameType.ResponseHead,
  FrameType.Data,
  FrameType.End,
  FrameType.Reset,
  FrameType.Credit,
  FrameType.WsMessage,
  FrameType.WsClose,
  FrameType.Open,
]);

/** Validates one decoded msgpack value as a frame (undefined for an unknown type). */
function checkFrame(value: unknown): Frame | undefined {
  if (!Array.isArray(value) || value.length === 0) malformed("frame is not a msgpack array");
  const type = value[0];
  if (typeof type !== "number" || !Number.isInteger(type)) malformed(`frame type is ${describe(type)}, not an integer`);
  const at = new Fields(value, type);
  if (!STREAM_FRAMES.has(type)) return checkOther(at, type);
  const stream = at.stream();
  try {
    return checkStreamFrame(at, type, stream);
  } catch (error) {
    // The stream id was readable: the error is that stream's, and the connection may go on.
    if (error instanceof ProtocolError) error.stream = stream;
    throw error;
  }
}

function checkOther(at: Fields, type: number): Frame | undefined {
  switch (type) {
    case FrameType.Hello:
      return {
        type,
        version: at.int(1, "version", 0, 0xffff),
        agent: at.text(2, "agent", 64),
        name: at.text(3, "name", 63),
        token: at.text(4, "token", 512),
        claim: at.text(5, "claim", 128),
        // Absent in a protocol 1 hello: the relay reads its version and refuses it.
        rules: at.has(6) ? at.rules(6) : { basicAuth: [], allowIp: [], webhooks: [], connectKeys: [] },
        resume: at.has(7) ? at.resume(7) : null,
        tcp: at.has(8) ? at.bool(8, "tcp") : false,
        publicPort: at.has(9) ? at.bool(9, "publicPort") : false,
      };
    case FrameType.Ready:
      return {
        type,
        name: at.text(1, "name", 63),
        url: at.text(2, "url", 2048),
        open: at.bool(3, "open"),
        session: at.text(4, "session", 64),
        resumed: at.bool(5, "resumed"),
        received: at.int(6, "received", 0, Number.MAX_SAFE_INTEGER),
        tcp: at.has(7) ? at.bool(7, "tcp") : false,
        notice: at.has(8) ? at.text(8, "notice", MAX_MESSAGE_LENGTH) : "",
      };
    case FrameType.Connect:
      return {
        type,
        version: at.int(1, "version", 0, 0xffff),
        client: at.text(2, "client", 64),
        name: at.text(3, "name", 63),
        key: at.text(4, "key", 512),
        resume: at.resume(5),
      };
    case FrameType.Ack:
      return { type, received: at.int(1, "received", 0, Number.MAX_SAFE_INTEGER) };
    case FrameType.Refused:
      return { type, code: at.code(1) as RefusalCode, message: at.message(2) };
    default:
      return undefined;
  }
}

function checkStreamFrame(at: Fields, type: number, stream: number): Frame | undefined {
  switch (type) {
    case FrameType.RequestHead:
      return {
        type,
        stream,
        method: at.token(2, "method"),
        path: at.path(3),
        headers: at.headers(4),
      };
    case FrameType.ResponseHead:
      return { type, stream, status: at.int(2, "status", 100, 599), headers: at.headers(3) };
    case FrameType.Data:
      return { type, stream, bytes: at.bytes(2) };
    case FrameType.End:
      return { type, stream };
    case FrameType.Reset:
      return { type, stream, code: at.code(2) as ResetCode, message: at.message(3) };
    case FrameType.Credit:
      return { type, stream, bytes: at.int(2, "bytes", 1, MAX_CREDIT) };
    case FrameType.WsMessage:
      return { type, stream, binary: at.bool(2, "binary"), final: at.bool(3, "final"), bytes: at.bytes(4) };
    case FrameType.WsClose:
      return { type, stream, code: at.int(2, "code", 1000, 4999), reason: at.text(3, "reason", 123) };
    case FrameType.Open:
      return { type, stream, from: at.text(2, "from", 64) };
    default:
      return undefined;
  }
}

// A single grant larger than this is a bug, not generosity.
const MAX_CREDIT = 0x7fff_ffff;

// RFC 9110 section 5.6.2: a token, used for methods and header names.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 section 5.5: field values are visible characters, spaces and tabs; never CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// Origin-form request target (RFC 9112 section 3.2.1): starts with "/", no spaces or controls.
const PATH = /^\/[\x21-\x7e\x80-\uffff]*$/;

/** Field readers for one decoded array; each names the frame and field in its error. */
class Fields {
  constructor(
    private readonly value: unknown[],
    private readonly type: number,
  ) {}

  has(index: number): boolean {
    return index < this.value.length;
  }

  private get(index: number, field: string): unknown {
    if (index >= this.value.length) malformed(`${this.frame()} has no ${field}`);
    return this.value[index];
  }

  private frame(): string {
    const name = Object.entries(FrameType).find(([, v]) => v === this.type)?.[0] ?? String(this.type);
    return `${name} frame`;
  }

  int(index: number, field: string, min: number, max: number): number {
    const v = this.get(index, field);
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      malformed(`${this.frame()} ${field} is ${describe(v)}; expected an integer from ${min} to ${max}`);
    }
    return v;
  }

  stream(): number {
    return this.int(1, "stream", 0, MAX_STREAM_ID);
  }

  text(index: number, field: string, maxLength: number): string {
    const v = this.get(index, field);
    if (typeof v !== "string") malformed(`${this.frame()} ${field} is ${describe(v)}, not a string`);
    if (v.length > maxLength) malformed(`${this.frame()} ${field} is ${v.length} characters; the limit is ${maxLength}`);
    return v;
  }

  message(index: number): string {
    return this.text(index, "message", MAX_MESSAGE_LENGTH);
  }

  /** A refusal or reset code. Codes a newer peer adds pass through; receivers treat unknown ones generically. */
  code(index: number): string {
    const v = this.text(index, "code", 64);
    if (!/^[a-z][a-z0-9-]*$/.test(v)) malformed(`${this.frame()} code ${JSON.stringify(v)} is not a lowercase-hyphenated word`);
    return v;
  }

  token(index: number, field: string): string {
    const v = this.text(index, field, 64);
    if (!TOKEN.test(v)) malformed(`${this.frame()} ${field} ${JSON.stringify(v)} is not an HTTP token`);
    return v;
  }

  path(index: number): string {
    const v = this.text(index, "path", MAX_HEADER_BYTES);
    if (!PATH.test(v))
      malformed(
        `${this.frame()} path ${JSON.stringify(v.slice(0, 80))} must start with "/" and hold no spaces or control characters`,
      );
    return v;
  }

  bool(index: number, field: string): boolean {
    const v = this.get(index, field);
    if (typeof v !== "boolean") malformed(`${this.frame()} ${field} is ${describe(v)}, not a boolean`);
    return v;
  }

  bytes(index: number): Uint8Array {
    const v = this.get(index, "bytes");
    if (!(v instanceof Uint8Array)) malformed(`${this.frame()} bytes is ${describe(v)}, not binary`);
    return v;
  }

  headers(index: number): HeaderList {
    const v = this.get(index, "headers");
    if (!Array.isArray(v)) malformed(`${this.frame()} headers is ${describe(v)}, not an array`);
    if (v.length > MAX_HEADERS) malformed(`${this.frame()} has ${v.length} header fields; the limit is ${MAX_HEADERS}`);
    const list: HeaderList = [];
    for (const entry of v) {
      if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== "string" || typeof entry[1] !== "string") {
        malformed(`${this.frame()} header ${list.length} is not a [name, value] pair of strings`);
      }
      const [name, value] = entry as [string, string];
      if (name.length + value.length > MAX_HEADER_BYTES) {
        malformed(
          `${this.frame()} header ${JSON.stringify(name.slice(0, 80))} is ${name.length + value.length} characters; the limit is ${MAX_HEADER_BYTES}`,
        );
      }
      if (!TOKEN.test(name)) malformed(`${this.frame()} header name ${JSON.stringify(name.slice(0, 80))} is not an HTTP token`);
      if (!FIELD_VALUE.test(value)) {
        malformed(`${this.frame()} header ${name} holds a control character (CR, LF or NUL are never allowed)`);
      }
      list.push([name, value]);
    }
    return list;
  }

  resume(index: number): { session: string; received: number } | null {
    const v = this.get(index, "resume");
    if (v === null) return null;
    if (!Array.isArray(v) || v.length < 2) malformed(`${this.frame()} resume is ${describe(v)}, not [session, received]`);
    const at = new Fields(v, this.type);
    return { session: at.text(0, "resume.session", 64), received: at.int(1, "resume.received", 0, Number.MAX_SAFE_INTEGER) };
  }

  rules(index: number): VisitorRules {
    const v = this.get(index, "rules");
    if (!Array.isArray(v) || v.length < 3)
      malformed(`${this.frame()} rules is ${describe(v)}, not [basicAuth, allowIp, webhooks]`);
    const list = (i: number, field: string): unknown[] => {
      const l = v[i];
      if (!Array.isArray(l)) malformed(`${this.frame()} rules.${field} is ${describe(l)}, not an array`);
      if (l.length > MAX_RULES) malformed(`${this.frame()} has ${l.length} ${field} rules; the limit is ${MAX_RULES}`);
      return l;
    };
    const text = (x: unknown, field: string, max: number): string => {
      if (typeof x !== "string" || x.length === 0 || x.length > max) {
        malformed(`${this.frame()} rules.${field} entry is ${describe(x)}; expected a string of 1 to ${max} characters`);
      }
      return x;
    };
    const basicAuth = list(0, "basicAuth").map((x) => text(x, "basicAuth", 128));
    const allowIp = list(1, "allowIp").map((x) => text(x, "allowIp", 64));
    const webhooks = list(2, "webhooks").map((x): WebhookRule => {
      if (!Array.isArray(x) || x.length !== 3) malformed(`${this.frame()} rules.webhooks entry is not [kind, header, secret]`);
      const kind = x[0];
      if (kind !== "github" && kind !== "hmac-sha256") malformed(`${this.frame()} webhook kind ${describe(kind)} is unknown`);
      const header = text(x[1], "webhooks.header", 128);
      if (!TOKEN.test(header)) malformed(`${this.frame()} webhook header ${JSON.stringify(header)} is not an HTTP token`);
      return { kind, header: header.toLowerCase(), secret: text(x[2], "webhooks.secret", 512) };
    });
    // Absent before TCP tunnels: no keys.
    const connectKeys = v.length > 3 ? list(3, "connectKeys").map((x) => text(x, "connectKeys", 128)) : [];
    return { basicAuth, allowIp, webhooks, connectKeys };
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Uint8Array) return `${value.byteLength} bytes of binary`;
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === "object") return "a map";
  return String(value);
}
