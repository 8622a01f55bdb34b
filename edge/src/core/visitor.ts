import { type HeaderList, MAX_FRAME_BYTES, MAX_HEADER_BYTES, MAX_HEADERS } from "@burrow/protocol";
import { EdgeError } from "./errors.ts";

/** A visitor's request as the RequestHead frame will carry it. */
export interface ForwardedRequest {
  method: string;
  /** Path and query as forwarded (the `/t/<name>` prefix already cut). */
  path: string;
  /** The fields the frame will carry: after the relay's filtering and its X-Forwarded-*. */
  headers: HeaderList;
}

/** Default for MAX_REQUEST_HEAD_BYTES: request line and fields, as a visitor would count them. */
export const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;

/**
 * The RequestHead frame must stay under MAX_FRAME_BYTES whatever the var says: msgpack adds at
 * most 11 bytes per field (a fixarray and two str32 headers) and a few for the frame itself.
 */
export const MAX_HEAD_BYTES_CEILING = MAX_FRAME_BYTES - MAX_HEADERS * 11 - 1024;

// The same grammar as the codec's guards (protocol/src/codec.ts), which the agent applies to
// every RequestHead: a frame they refuse costs the agent its whole connection.
// RFC 9110 section 5.6.2: a token, for methods and field names.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 section 5.5: visible characters, spaces, tabs and obs-text; never CR, LF or NUL.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const FIELD_VALUE_BAD = /[^\t\x20-\x7e\x80-\xff]/;
// Origin-form request target (RFC 9112 section 3.2.1).
const PATH = /^\/[\x21-\x7e\x80-\uffff]*$/;
const MAX_METHOD_LENGTH = 64;

/**
 * Checks a visitor's request against the protocol's limits before the relay frames it, so that
 * the relay answers a request the agent would refuse instead of sending it.
 * @throws {EdgeError} 414 uri-too-long, 431 request-header-too-large, 400 bad-request.
 */
export function checkVisitorRequest(head: ForwardedRequest, maxHeadBytes: number): void {
  const { method, path, headers } = head;
  if (method.length > MAX_METHOD_LENGTH || !TOKEN.test(method)) {
    throw new EdgeError(
      400,
      "bad-request",
      `The method is not an HTTP token of at most ${MAX_METHOD_LENGTH} characters (it is ${method.length}).`,
    );
  }
  if (path.length > MAX_HEADER_BYTES) {
    throw new EdgeError(
      414,
      "uri-too-long",
      `The path and query are ${path.length} bytes; the limit is ${MAX_HEADER_BYTES}. Send long data in the request body.`,
    );
  }
  if (!PATH.test(path)) {
    throw new EdgeError(400, "bad-request", "The path must start with / and hold no spaces or control characters.");
  }
  if (headers.length > MAX_HEADERS) {
    throw new EdgeError(
      431,
      "request-header-too-large",
      `The request has ${headers.length} header fields (with the relay's X-Forwarded-*); the limit is ${MAX_HEADERS}.`,
    );
  }
  let total = utf8Length(method) + utf8Length(path) + 12; // "GET /path HTTP/1.1\r\n"
  for (const [name, value] of headers) {
    if (!TOKEN.test(name)) {
      throw new EdgeError(400, "bad-request", `A header name is not an HTTP token (RFC 9110 section 5.6.2).`);
    }
    const size = name.length + value.length;
    if (size > MAX_HEADER_BYTES) {
      throw new EdgeError(
        431,
        "request-header-too-large",
        `The header "${name.slice(0, 80)}" is ${size} bytes; the limit is ${MAX_HEADER_BYTES}.`,
      );
    }
    if (!FIELD_VALUE.test(value)) {
      const at = value.search(FIELD_VALUE_BAD);
      const code = value.charCodeAt(at).toString(16).padStart(4, "0");
      throw new EdgeError(
        400,
        "bad-request",
        `The header "${name.slice(0, 80)}" holds the character U+${code.toUpperCase()} at ${at}; field values allow tabs, spaces and visible bytes (RFC 9110 section 5.5).`,
      );
    }
    total += utf8Length(name) + utf8Length(value) + 4; // ": " and CRLF
  }
  if (total > maxHeadBytes) {
    throw new EdgeError(
      431,
      "request-header-too-large",
      `The request's head is ${total} bytes (${headers.length} header fields); the limit is ${maxHeadBytes} (MAX_REQUEST_HEAD_BYTES).`,
    );
  }
}

/** Bytes of `text` in UTF-8, as msgpack will encode it (a lone surrogate as 3, like TextEncoder). */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2; // 4 bytes for 2 units
        i++;
      } else bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}
