import http from "node:http";
import { type HeaderList, HOP_BY_HOP, type ResetCode } from "@burrow/protocol";

// node:http rather than fetch, on purpose and on every runtime: the fetch of Node, Bun and Deno
// inflates gzip and brotli bodies while keeping Content-Encoding, so the visitor would receive
// a decoded body labelled as encoded. Bun and Deno both implement node:http faithfully enough.

/** Connection errors that mean nothing is listening there (as opposed to a failure mid-request). */
export const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "ETIMEDOUT",
]);

/** What the origin said, delivered as it arrives. */
export interface OriginHandlers {
  head(status: number, headers: HeaderList): void;
  data(bytes: Uint8Array): void;
  end(): void;
  /** Failed before or during the response; nothing more is delivered after this. */
  fail(code: ResetCode, message: string): void;
}

/** One request in flight to the origin: its body is written as the visitor sends it. */
export interface OriginExchange {
  /** Writes request body bytes; `flushed` runs once the origin's connection took them. */
  write(bytes: Uint8Array, flushed: () => void): void;
  end(): void;
  abort(): void;
  /** Stops and restarts the delivery of response body bytes (flow control). */
  pause(): void;
  resume(): void;
}

/** The one local server this agent forwards to. It never talks to any other host. */
export class Origin {
  readonly url: string;
  private readonly pool = new http.Agent({ keepAlive: true, maxSockets: 256 });

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {
    this.url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }

  /** Sends a request with an origin-form `path`; the Host header names the origin itself. */
  open(method: string, path: string, headers: HeaderList, on: OriginHandlers): OriginExchange {
    let settled = false;
    const fail = (code: ResetCode, message: string) => {
      if (settled) return;
      settled = true;
      on.fail(code, message);
    };
    const outgoing: Record<string, string | string[]> = {};
    for (const [name, value] of headers) {
      const key = name.toLowerCase();
      const seen = outgoing[key];
      outgoing[key] = seen === undefined ? value : [...(Array.isArray(seen) ? seen : [seen]), value];
    }
    outgoing.host = this.url.slice("http://".length);

    let request: http.ClientRequest;
    try {
      request = http.request({
        host: this.host,
        port: this.port,
        method,
        path,
        headers: outgoing,
        agent: this.pool,
        setHost: false,
      });
    } catch (error) {
      fail("protocol-error", `the request could not be sent to the local server: ${(error as Error).message}`);
      return { write() {}, end() {}, abort() {}, pause() {}, resume() {} };
    }
    // Node's http turns Nagle's algorithm off for its sockets; Deno's node:http does not, and a
    // small request then waits ~40 ms for a delayed ACK.
    request.on("socket", (socket) => socket.setNoDelay(true));
    // The head goes at once, not with the first body chunk (node:http waits for a write or
    // end() otherwise): the origin sees a request whose body is slow to come, or never comes,
    // and may answer it early (a 401 before an upload, a 431 for a head too large). Found by
    // fuzzing: a head whose End never came was never answered.
    request.flushHeaders();
    let response: http.IncomingMessage | undefined;
    request.on("response", (incoming) => {
      response = incoming;
      on.head(incoming.statusCode ?? 502, responseHeaderList(incoming.rawHeaders));
      incoming.on("data", (chunk: Uint8Array) => {
        if (!settled) on.data(chunk);
      });
      incoming.on("end", () => {
        if (settled) return;
        settled = true;
        on.end();
      });
      incoming.on("close", () => {
        if (!incoming.complete) fail("origin-error", `the local server at ${this.url} closed the connection mid-response`);
      });
      incoming.on("error", () => {});
    });
    request.on("error", (error: NodeJS.ErrnoException) => {
      const code = error.code ?? error.message;
      if (UNREACHABLE.has(code)) {
        fail("origin-unreachable", `the local server at ${this.url} is not answering (${code}): is it running on that port?`);
      } else {
        fail("origin-error", `the local server at ${this.url} failed this request (${code})`);
      }
    });
    return {
      write: (bytes, flushed) => {
        if (!request.destroyed && !request.writableEnded) request.write(bytes, () => flushed());
      },
      end: () => {
        if (!request.destroyed && !request.writableEnded) request.end();
      },
      abort: () => {
        settled = true;
        request.destroy();
      },
      pause: () => response?.pause(),
      resume: () => response?.resume(),
    };
  }

  close(): void {
    this.pool.destroy();
  }
}

/** node:http's flat [name, value, name, value] list minus hop-by-hop fields. */
function responseHeaderList(raw: string[]): HeaderList {
  const list: HeaderList = [];
  let named = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === "connection") {
      named = new Set(raw[i + 1]!.split(",").map((t) => t.trim().toLowerCase()));
    }
  }
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    list.push([name, raw[i + 1]!]);
  }
  return list;
}
