import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import { checkServerIdentity, rootCertificates } from "node:tls";
import { type HeaderList, HOP_BY_HOP, type ResetCode } from "@burrow/protocol";
import { Http1Client } from "./net/http1.ts";

// Not fetch, on purpose and on every runtime: the fetch of Node, Bun and Deno inflates gzip and
// brotli bodies while keeping Content-Encoding, so the visitor would receive a decoded body
// labelled as encoded. A plain-http origin gets the agent's own HTTP/1.1 client (net/http1.ts,
// on node:net, the same on every runtime); an https: one, node:https.

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

/** How an origin is reached beyond its URL. */
export interface OriginOptions {
  /** "rewrite" (the origin's own host:port, the default), "preserve" (the public host), or a fixed value. */
  hostHeader?: string;
  /** For https: origins: CA certificates (PEM) to trust besides the usual roots. */
  ca?: string;
  /** For https: origins: accept any certificate (a local dev server's self-signed one). */
  insecure?: boolean;
  /** What people see in the log instead of the URL (the directory of --dir). */
  label?: string;
}

/** TLS error codes that mean the origin's certificate is not trusted (as opposed to a broken connection). */
export const UNTRUSTED = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_UNTRUSTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The error line for an origin whose certificate failed, naming the two ways out. */
export function untrustedMessage(url: string, code: string): string {
  return `the local server at ${url} has a certificate this agent does not trust (${code}): pass --origin-ca FILE with its CA, or --origin-insecure for a development server`;
}

/** The one local server this agent forwards to. It never talks to any other host. */
export class Origin {
  /** Where requests go: http(s)://host:port, no path. */
  readonly url: string;
  /** What the log shows for this origin. */
  readonly label: string;
  readonly secure: boolean;
  /** TLS settings for https: origins, for node:https and the `ws` client alike. */
  readonly tls: Pick<https.RequestOptions, "ca" | "rejectUnauthorized" | "servername" | "checkServerIdentity">;
  private readonly host: string;
  private readonly port: number;
  private readonly pool: http.Agent | undefined;
  private readonly plain: Http1Client | undefined;

  constructor(
    target: URL,
    private readonly options: OriginOptions = {},
  ) {
    this.secure = target.protocol === "https:";
    this.host = target.hostname.replace(/^\[(.*)\]$/, "$1");
    this.port = Number(target.port) || (this.secure ? 443 : 80);
    this.url = `${target.protocol}//${this.host.includes(":") ? `[${this.host}]` : this.host}:${this.port}`;
    this.label = options.label ?? this.url;
    // The certificate is checked against the origin's own name, whatever Host the origin is
    // sent (node:https would otherwise take the SNI name, and so the check, from that header).
    const name = this.host;
    this.tls = this.secure
      ? {
          // Always a list of roots, as dial.ts does: Deno's node:https reads NODE_USE_SYSTEM_CA
          // (an --allow-env the agent does not have) when it is given none.
          ca: options.ca ? [...rootCertificates, options.ca] : [...rootCertificates],
          rejectUnauthorized: !options.insecure,
          // No SNI for an IP address (RFC 6066 section 3); node:https would otherwise derive one from Host.
          servername: isIP(name) ? "" : name,
          checkServerIdentity: (_host, cert) => checkServerIdentity(name, cert),
        }
      : {};
    if (this.secure) this.pool = new https.Agent({ keepAlive: true, maxSockets: 256, ...this.tls });
    else this.plain = new Http1Client(this.host, this.port);
  }

  /** The Host header the origin is sent, for a visitor request with these headers. */
  hostFor(headers: HeaderList): string {
    const mode = this.options.hostHeader ?? "rewrite";
    if (mode === "rewrite") return this.url.replace(/^https?:\/\//, "");
    if (mode !== "preserve") return mode;
    // The relay always sets X-Forwarded-Host to the host the visitor asked for.
    const forwarded = headers.find(([name]) => name.toLowerCase() === "x-forwarded-host")?.[1];
    return forwarded ?? this.url.replace(/^https?:\/\//, "");
  }

  /** Why a connection error happened, for the visitor and the log. */
  describe(code: string, what = "failed this request"): { unreachable: boolean; message: string } {
    if (UNREACHABLE.has(code)) {
      return {
        unreachable: true,
        message: `the local server at ${this.url} is not answering (${code}): is it running on that port?`,
      };
    }
    if (UNTRUSTED.has(code)) return { unreachable: false, message: untrustedMessage(this.url, code) };
    return { unreachable: false, message: `the local server at ${this.url} ${what} (${code})` };
  }

  /** Sends a request with an origin-form `path`; the Host header names the origin itself. */
  open(method: string, path: string, headers: HeaderList, on: OriginHandlers): OriginExchange {
    if (this.plain) return this.openPlain(this.plain, method, path, headers, on);
    // The head waits for the frames of its own message, as in net/http1.ts: a request without
    // Content-Length is sent chunked when a body follows. Else node:http (Node's and Bun's)
    // writes the body of a GET, DELETE or OPTIONS unframed, which the origin reads as another
    // request on the connection.
    let real: OriginExchange | undefined;
    const early: ({ bytes: Uint8Array; flushed: () => void } | "end")[] = [];
    let aborted = false;
    let paused = false;
    let refused = false;
    queueMicrotask(() => {
      if (aborted) return;
      try {
        opened();
      } catch (error) {
        // Outside the forwarder's own try: a throw here would otherwise end the agent.
        aborted = true;
        real?.abort();
        on.fail("protocol-error", `the request could not be sent to the local server: ${(error as Error).message}`);
      }
    });
    const opened = () => {
      const body = early[0] !== "end" && method !== "GET" && method !== "HEAD";
      const sized = headers.some(([name]) => name.toLowerCase() === "content-length");
      const node = this.openNode(method, path, headers, on, body && !sized);
      // A head sent without framing for a body: written, the bytes would be another request.
      real =
        body || sized
          ? node
          : {
              ...node,
              write: (bytes, flushed) => {
                if (bytes.byteLength === 0) return flushed();
                if (refused) return;
                refused = true;
                node.abort();
                on.fail(
                  "protocol-error",
                  "the request could not be sent to the local server: a body came for a request sent without one",
                );
              },
            };
      if (paused) real.pause();
      for (const step of early) {
        if (step === "end") real.end();
        else real.write(step.bytes, step.flushed);
      }
    };
    return {
      write: (bytes, flushed) => (real ? real.write(bytes, flushed) : void early.push({ bytes, flushed })),
      end: () => (real ? real.end() : void early.push("end")),
      abort: () => {
        aborted = true;
        real?.abort();
      },
      pause: () => {
        paused = true;
        real?.pause();
      },
      resume: () => {
        paused = false;
        real?.resume();
      },
    };
  }

  /** The same through node:http or node:https; `chunked`: the body is sent chunked, whatever the method. */
  private openNode(method: string, path: string, headers: HeaderList, on: OriginHandlers, chunked: boolean): OriginExchange {
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
    outgoing.host = this.hostFor(headers);
    if (chunked) outgoing["transfer-encoding"] = "chunked";

    let request: http.ClientRequest;
    try {
      request = (this.secure ? https : http).request({
        ...this.tls,
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
    let response: http.IncomingMessage | undefined;
    try {
      // Node's http turns Nagle's algorithm off for its sockets; Deno's node:http does not, and a
      // small request then waits ~40 ms for a delayed ACK.
      request.on("socket", (socket) => socket.setNoDelay(true));
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
        const { unreachable, message } = this.describe(error.code ?? error.message);
        fail(unreachable ? "origin-unreachable" : "origin-error", message);
      });
      // The head goes at once, not with the first body chunk (node:http waits for a write or
      // end() otherwise): the origin sees a request whose body is slow to come, or never comes,
      // and may answer it early (a 401 before an upload, a 431 for a head too large). Found by
      // fuzzing: a head whose End never came was never answered.
      request.flushHeaders();
    } catch (error) {
      // Failed once, and nothing of this request reaches the visitor's stream after that.
      fail("protocol-error", `the request could not be sent to the local server: ${(error as Error).message}`);
      request.destroy();
      return { write() {}, end() {}, abort() {}, pause() {}, resume() {} };
    }
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

  /** The same over the agent's own client (see net/http1.ts). */
  private openPlain(client: Http1Client, method: string, path: string, headers: HeaderList, on: OriginHandlers): OriginExchange {
    let settled = false;
    let answered = false;
    const list: HeaderList = [["host", this.hostFor(headers)]];
    for (const entry of headers) if (entry[0].toLowerCase() !== "host") list.push(entry);
    try {
      return client.request(method, path, list, {
        head: (status, raw) => {
          answered = true;
          on.head(status, responseHeaderList(raw));
        },
        data: (bytes) => {
          if (!settled) on.data(bytes);
        },
        end: () => {
          if (settled) return;
          settled = true;
          on.end();
        },
        fail: (code, message) => {
          if (settled) return;
          settled = true;
          if (code === "EPROTO") return on.fail("origin-error", `the local server at ${this.url} ${message}`);
          if (code === "EBODY") return on.fail("protocol-error", `the request could not be sent to the local server: ${message}`);
          if (code === "ECLOSED") {
            const what = answered ? "closed the connection mid-response" : "closed the connection without answering";
            return on.fail("origin-error", `the local server at ${this.url} ${what}`);
          }
          const { unreachable, message: said } = this.describe(code);
          on.fail(unreachable ? "origin-unreachable" : "origin-error", said);
        },
      });
    } catch (error) {
      settled = true;
      on.fail("protocol-error", `the request could not be sent to the local server: ${(error as Error).message}`);
      return { write() {}, end() {}, abort() {}, pause() {}, resume() {} };
    }
  }

  close(): void {
    this.pool?.destroy();
    this.plain?.close();
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
