import { gunzipSync, inflateSync } from "node:zlib";
import type { HeaderList } from "@burrow/protocol";
import type { Entry, KeptBody } from "./recorder.ts";

/** What the list shows of an entry. */
export function summary(entry: Entry) {
  const end = entry.timings.responseEnd ?? entry.timings.responseHead;
  return {
    id: entry.id,
    tunnel: entry.tunnel,
    kind: entry.kind,
    replayOf: entry.replayOf ?? null,
    startedAt: entry.startedAt,
    method: entry.method,
    path: entry.path,
    status: entry.status ?? null,
    state: entry.state,
    error: entry.error ?? null,
    duration: end === undefined ? null : Math.round(end),
    requestSize: entry.request.size,
    responseSize: entry.response.size,
  };
}

/** Everything the inspector kept of an entry, bodies made readable. */
export function detail(entry: Entry) {
  const round = (ms: number | undefined) => (ms === undefined ? null : Math.round(ms * 10) / 10);
  const { requestEnd, responseHead, responseEnd } = entry.timings;
  const request = bodyView(entry.request, entry.requestHeaders);
  return {
    ...summary(entry),
    requestHeaders: entry.requestHeaders,
    responseHeaders: entry.responseHeaders ?? [],
    request,
    /** The request body as sent, for editing; null when it is not text. */
    requestText: request.kind === "binary" ? null : new TextDecoder().decode(entry.request.bytes()),
    response: bodyView(entry.response, entry.responseHeaders ?? []),
    timings: {
      // From the request head's arrival from the relay at the agent.
      requestBody: round(requestEnd),
      originHead: round(responseHead),
      responseBody: responseEnd === undefined || responseHead === undefined ? null : round(responseEnd - responseHead),
      total: round(responseEnd),
    },
    messages: entry.messages?.map((message) => ({
      from: message.from,
      at: Math.round(message.at),
      ...bodyView(message.body, [], message.binary),
    })),
    messagesDropped: entry.messagesDropped ?? 0,
    close: entry.close ?? null,
  };
}

export function header(headers: HeaderList, name: string): string | undefined {
  return headers.find(([key]) => key.toLowerCase() === name)?.[1];
}

const HEX_SHOWN = 4096;

/**
 * A body as the page shows it: JSON pretty-printed, form fields one a line, text as text, else a
 * hex dump of its start. Compressed bodies (Content-Encoding) are shown inflated when whole.
 */
export function bodyView(body: KeptBody, headers: HeaderList, binary?: boolean) {
  const base = { size: body.size, kept: body.kept, truncated: body.truncated };
  if (body.size === 0) return { ...base, kind: "empty" as const, text: "" };
  let bytes = body.bytes();
  const encoding = header(headers, "content-encoding")?.toLowerCase();
  let decoded: string | undefined;
  if (encoding && !body.truncated) {
    try {
      if (encoding === "gzip") bytes = new Uint8Array(gunzipSync(bytes));
      else if (encoding === "deflate") bytes = new Uint8Array(inflateSync(bytes));
      decoded = encoding;
    } catch {}
  }
  const type = (header(headers, "content-type") ?? "").toLowerCase();
  const text = binary ? undefined : utf8(bytes, body.truncated);
  if (text === undefined) {
    return { ...base, decoded, kind: "binary" as const, text: hexDump(bytes.subarray(0, HEX_SHOWN)) };
  }
  if (!body.truncated && (type.includes("json") || /^\s*[[{]/.test(text))) {
    try {
      return { ...base, decoded, kind: "json" as const, text: JSON.stringify(JSON.parse(text), null, 2) };
    } catch {}
  }
  if (type.startsWith("application/x-www-form-urlencoded")) {
    const lines = [...new URLSearchParams(text)].map(([key, value]) => `${key} = ${value}`);
    return { ...base, decoded, kind: "form" as const, text: lines.join("\n") };
  }
  return { ...base, decoded, kind: "text" as const, text };
}

/** UTF-8 text without control characters other than whitespace, else undefined. */
function utf8(bytes: Uint8Array, truncated: boolean): string | undefined {
  let text: string;
  try {
    // A truncated body may end inside a character: the cut is not an error.
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes, { stream: truncated });
  } catch {
    return undefined;
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds
  return /[\u0000-\u0008\u000e-\u001f\u007f]/.test(text) ? undefined : text;
}

export function hexDump(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let at = 0; at < bytes.byteLength; at += 16) {
    const row = bytes.subarray(at, at + 16);
    const hex = [...row].map((byte) => byte.toString(16).padStart(2, "0")).join(" ");
    const ascii = [...row].map((byte) => (byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : ".")).join("");
    lines.push(`${at.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

/** The URL the visitor asked for, from the head the relay passed on. */
export function publicUrl(entry: Entry): string {
  const host = header(entry.requestHeaders, "x-forwarded-host") ?? header(entry.requestHeaders, "host") ?? "localhost";
  const proto = header(entry.requestHeaders, "x-forwarded-proto") ?? "http";
  return `${proto}://${host}${entry.path}`;
}

// Fields curl and HAR consumers set themselves, or that describe this hop only.
const NOT_EXPORTED = new Set(["host", "content-length", "connection", "transfer-encoding", "keep-alive"]);

function quote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The request as a curl command line, against the URL the visitor used. */
export function curl(entry: Entry): string {
  const parts = ["curl"];
  if (entry.method !== "GET") parts.push("-X", quote(entry.method));
  parts.push(quote(publicUrl(entry)));
  for (const [name, value] of entry.requestHeaders) {
    if (!NOT_EXPORTED.has(name.toLowerCase())) parts.push("-H", quote(`${name}: ${value}`));
  }
  const body = bodyView(entry.request, entry.requestHeaders);
  const notes: string[] = [];
  if (body.kind === "binary") notes.push(`# the ${body.size}-byte binary body is not included`);
  else if (body.size > 0) {
    parts.push("--data-binary", quote(new TextDecoder().decode(entry.request.bytes())));
    if (body.truncated) notes.push(`# the body was kept truncated: ${body.kept} of ${body.size} bytes`);
  }
  return [...notes, parts.join(" ")].join("\n");
}

const toHar = (headers: HeaderList) => headers.map(([name, value]) => ({ name, value }));

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let at = 0; at < bytes.byteLength; at += 0x8000) text += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  return btoa(text);
}

/** Entries as a HAR 1.2 log (http://www.softwareishard.com/blog/har-12-spec/), oldest first. */
export function har(entries: Entry[], version: string) {
  return {
    log: {
      version: "1.2",
      creator: { name: "burrow agent", version },
      entries: entries.map((entry) => {
        const url = publicUrl(entry);
        const type = header(entry.requestHeaders, "content-type");
        const request = new TextDecoder().decode(entry.request.bytes());
        const response = entry.response.bytes();
        const { requestEnd = 0, responseHead, responseEnd } = entry.timings;
        // HAR 1.2 allows -1 (not applicable) only for blocked, dns, connect and ssl.
        const wait = responseHead === undefined ? 0 : Math.max(0, responseHead - requestEnd);
        const receive = responseEnd === undefined || responseHead === undefined ? 0 : responseEnd - responseHead;
        const notes = [
          entry.replayOf ? `replay of #${entry.replayOf}` : "",
          entry.request.truncated ? `request body truncated to ${entry.request.kept} of ${entry.request.size} bytes` : "",
          entry.response.truncated ? `response body truncated to ${entry.response.kept} of ${entry.response.size} bytes` : "",
          entry.error ? `${entry.error.code}: ${entry.error.message}` : "",
        ].filter(Boolean);
        return {
          startedDateTime: new Date(entry.startedAt).toISOString(),
          time: responseEnd ?? responseHead ?? 0,
          request: {
            method: entry.method,
            url,
            httpVersion: "HTTP/1.1",
            headers: toHar(entry.requestHeaders),
            queryString: [...new URL(url).searchParams].map(([name, value]) => ({ name, value })),
            cookies: [],
            headersSize: -1,
            bodySize: entry.request.size,
            ...(entry.request.size > 0 ? { postData: { mimeType: type ?? "", text: request } } : {}),
          },
          response: {
            status: entry.status ?? 0,
            statusText: "",
            httpVersion: "HTTP/1.1",
            headers: toHar(entry.responseHeaders ?? []),
            cookies: [],
            content: {
              size: entry.response.size,
              mimeType: header(entry.responseHeaders ?? [], "content-type") ?? "",
              text: base64(response),
              encoding: "base64",
            },
            redirectURL: header(entry.responseHeaders ?? [], "location") ?? "",
            headersSize: -1,
            bodySize: entry.response.size,
          },
          cache: {},
          timings: { send: requestEnd, wait, receive },
          // Chrome's DevTools' extension field for a WebSocket's messages (opcode 1 text, 2 binary).
          ...(entry.messages
            ? {
                _webSocketMessages: entry.messages.map((message) => ({
                  type: message.from === "visitor" ? "send" : "receive",
                  time: (entry.startedAt + message.at) / 1000,
                  opcode: message.binary ? 2 : 1,
                  data: message.binary ? base64(message.body.bytes()) : new TextDecoder().decode(message.body.bytes()),
                })),
              }
            : {}),
          ...(notes.length ? { comment: notes.join("; ") } : {}),
        };
      }),
    },
  };
}
