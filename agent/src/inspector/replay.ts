import { FrameType, type HeaderList } from "@burrow/protocol";
import type { Origin } from "../origin.ts";
import type { Entry, Recorder } from "./recorder.ts";

/** A refusal of the inspector's API: its status and a message for the page. */
export class InspectorError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** What the page may change before replaying; each field left out is the original's. */
export interface ReplayEdits {
  method?: string;
  path?: string;
  headers?: HeaderList;
  /** The new body, as text. */
  body?: string;
}

// RFC 9110 section 5.6.2: a method is a token.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Checks untrusted JSON from the page into edits. @throws {InspectorError} 400 */
export function readEdits(value: unknown): ReplayEdits {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new InspectorError(400, "send a JSON object");
  const { method, path, headers, body } = value as Record<string, unknown>;
  if (method !== undefined && (typeof method !== "string" || !TOKEN.test(method) || method.toUpperCase() === "CONNECT")) {
    throw new InspectorError(400, `method ${JSON.stringify(method)} is not one the agent forwards`);
  }
  if (path !== undefined && (typeof path !== "string" || !path.startsWith("/") || /[\s]/.test(path))) {
    throw new InspectorError(400, "path must start with / and hold no spaces (an origin-form target: /search?q=1)");
  }
  if (
    headers !== undefined &&
    !(
      Array.isArray(headers) &&
      headers.every((pair) => Array.isArray(pair) && pair.length === 2 && pair.every((part) => typeof part === "string"))
    )
  ) {
    throw new InspectorError(400, 'headers must be a list of [name, value] pairs: [["accept", "text/html"]]');
  }
  if (body !== undefined && typeof body !== "string") throw new InspectorError(400, "body must be a string");
  return { method, path, headers: headers as HeaderList | undefined, body };
}

// Recomputed for the body actually sent.
const FRAMING = new Set(["content-length", "transfer-encoding"]);

/**
 * Sends `source` again to the origin, as it was or edited, through the same Origin as the
 * tunnel's requests (never to any other host); the replay is recorded as a new entry.
 * @returns the new entry's id.
 * @throws {InspectorError} 409 for a WebSocket, or a body kept truncated that is not replaced.
 */
export function replay(recorder: Recorder, origin: Origin, source: Entry, edits: ReplayEdits): number {
  if (source.kind === "websocket") throw new InspectorError(409, "a WebSocket cannot be replayed: open a new one");
  if (edits.body === undefined && source.request.truncated) {
    throw new InspectorError(
      409,
      `the body was kept truncated (${source.request.kept} of ${source.request.size} bytes): replaying it would send another request; edit the body to replay`,
    );
  }
  const body = edits.body === undefined ? source.request.bytes() : new TextEncoder().encode(edits.body);
  const method = edits.method ?? source.method;
  const path = edits.path ?? source.path;
  const headers: HeaderList = (edits.headers ?? source.requestHeaders).filter(([name]) => !FRAMING.has(name.toLowerCase()));
  if (body.byteLength > 0 || !/^(GET|HEAD|DELETE|OPTIONS)$/i.test(method))
    headers.push(["content-length", String(body.byteLength)]);
  const watch = recorder.exchange({ type: FrameType.RequestHead, stream: 0, method, path, headers }, source.id, source.tunnel);
  const exchange = origin.open(method, path, headers, {
    head: (status, answer) => watch.responseHead(status, answer),
    data: (bytes) => watch.responseData(bytes),
    end: () => watch.responseEnd(),
    fail: (code, message) => watch.fail(code, message),
  });
  if (body.byteLength > 0) {
    watch.requestData(body);
    exchange.write(body, () => {});
  }
  watch.requestEnd();
  exchange.end();
  return watch.id;
}
