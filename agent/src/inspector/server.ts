import http from "node:http";
import { isIP } from "node:net";
import { hostname } from "node:os";
import { AgentError } from "../errors.ts";
import type { Log } from "../log.ts";
import type { Origin } from "../origin.ts";
import { PAGE_HTML, PAGE_SCRIPT } from "./page.ts";
import type { Entry, Recorder } from "./recorder.ts";
import { InspectorError, readEdits, replay } from "./replay.ts";
import { curl, detail, har, summary } from "./views.ts";

/** Where the inspector listens, from --inspect. */
export interface InspectAddress {
  host: string;
  port: number;
  /** Given on the command line, not the default: a failure to listen is worth a warning. */
  chosen: boolean;
}

export const DEFAULT_INSPECT = "127.0.0.1:4040";
/** A taken port moves the inspector to the next one, this many times at most. */
const PORT_TRIES = 11;
const MAX_REPLAY_JSON = 1024 * 1024;

/**
 * Reads --inspect: false, PORT, HOST:PORT or [IPv6]:PORT.
 * @returns undefined when the inspector is off.
 * @throws {AgentError} "usage" for anything else.
 */
export function parseInspect(text: string | undefined): InspectAddress | undefined {
  if (text === undefined) return { ...parseInspect(DEFAULT_INSPECT)!, chosen: false };
  if (/^(false|off|no|none)$/i.test(text)) return undefined;
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d{1,5})$/.exec(text);
  const host = match?.[1]?.replace(/^\[(.*)\]$/, "$1") ?? "127.0.0.1";
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535 || !(host === "localhost" || isIP(host))) {
    throw new AgentError(
      "usage",
      `--inspect ${text} is not an address to listen on`,
      "use a port (--inspect 4040), an IP and port (--inspect 0.0.0.0:4040), or --inspect false",
    );
  }
  return { host, port, chosen: true };
}

/** Reads --inspect-keep. @throws {AgentError} "usage" */
export function parseKeep(text: string): number {
  const keep = Number(text);
  if (!Number.isInteger(keep) || keep < 1 || keep > 10_000) {
    throw new AgentError("usage", `--inspect-keep ${text} is out of range`, "keep from 1 to 10000 requests; 100 is the default");
  }
  return keep;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);

export interface Inspector {
  url: string;
  recorder: Recorder;
  close(): void;
}

/**
 * Serves the inspector's page and API on `address`, or the next free port up to 10 above it.
 * @returns undefined when every one of those ports is taken (after a warning).
 */
export async function startInspector(
  address: InspectAddress,
  recorder: Recorder,
  /** Each tunnel's origin, by tunnel name: replays go to the origin of the request's tunnel. */
  origins: ReadonlyMap<string, Origin>,
  version: string,
  log: Log,
  listenDenied?: (host: string, port: number) => string | undefined,
): Promise<Inspector | undefined> {
  const clients = new Set<http.ServerResponse>();
  let port = address.port;
  // A tunnel's own origin port is never the inspector's, even while nothing listens there:
  // visitors' requests would reach the inspector, with a Host it accepts.
  const originPorts = new Set([...origins.values()].map((origin) => Number(new URL(origin.url).port)));
  // Many agents on one machine (a test suite) take the default ports: that is no mistake, and
  // the agent says so without a warning; a chosen address that fails is worth one.
  const off = (why: string, hint: string): undefined => {
    if (address.chosen) log.warn(`the inspector ${why}; running without it (${hint}, or pass --inspect false)`);
    else log.info(`inspector: off (it ${why}; ${hint})`);
    return undefined;
  };
  const server = http.createServer((request, response) => {
    try {
      serve(request, response);
    } catch (error) {
      const status = error instanceof InspectorError ? error.status : 500;
      answer(response, status, { error: (error as Error).message });
    }
  });

  const allowedHost = (host: string | undefined): boolean => {
    if (!host) return false;
    let name: string;
    try {
      const url = new URL(`http://${host}`);
      if (Number(url.port || 80) !== port) return false;
      name = url.hostname.replace(/^\[(.*)\]$/, "$1");
    } catch {
      return false;
    }
    // A name other than these could be an attacker's domain pointed at this machine (DNS
    // rebinding): its pages would be same-origin with the inspector.
    if (LOOPBACK.has(name) || name === address.host) return true;
    return !LOOPBACK.has(address.host) && (isIP(name) !== 0 || name === hostname());
  };

  const serve = (request: http.IncomingMessage, response: http.ServerResponse) => {
    const host = request.headers.host;
    // Only the relay adds these: a request that went through a tunnel never gets in.
    if (request.headers["x-forwarded-host"] !== undefined || request.headers["x-forwarded-for"] !== undefined) {
      throw new InspectorError(403, "the inspector does not answer requests that came through a tunnel");
    }
    if (!allowedHost(host)) throw new InspectorError(403, `the inspector does not answer for Host ${JSON.stringify(host ?? "")}`);
    const url = new URL(request.url ?? "/", `http://${host}`);
    const api = url.pathname.startsWith("/api/");
    // Only the inspector's own page may call its API: no other site, even on this machine.
    const from = request.headers.origin;
    if (from !== undefined && from !== `http://${host}`) throw new InspectorError(403, `requests from ${from} are refused`);
    if (api && request.headers["sec-fetch-site"] === "cross-site")
      throw new InspectorError(403, "cross-site requests are refused");
    const route = `${request.method} ${url.pathname}`;
    if (route === "GET /") return text(response, 200, "text/html; charset=utf-8", PAGE_HTML);
    if (route === "GET /app.js") return text(response, 200, "text/javascript; charset=utf-8", PAGE_SCRIPT);
    if (route === "GET /api/requests") return answer(response, 200, recorder.list().map(summary));
    if (route === "GET /api/har") {
      response.setHeader("content-disposition", 'attachment; filename="burrow.har"');
      return answer(response, 200, har(recorder.list().reverse(), version));
    }
    if (route === "GET /api/events") return events(request, response);
    const match = /^\/api\/requests\/(\d+)(\/curl|\/replay)?$/.exec(url.pathname);
    if (!match) throw new InspectorError(404, `no such page: ${url.pathname}`);
    const entry = recorder.get(Number(match[1]));
    if (!entry) throw new InspectorError(404, `request #${match[1]} is no longer kept (the inspector keeps ${recorder.keep})`);
    if (request.method === "GET" && !match[2]) return answer(response, 200, detail(entry));
    if (request.method === "GET" && match[2] === "/curl")
      return text(response, 200, "text/plain; charset=utf-8", `${curl(entry)}\n`);
    if (request.method === "POST" && match[2] === "/replay") return replayRequest(request, response, entry);
    throw new InspectorError(405, `${request.method} is not allowed on ${url.pathname}`);
  };

  const replayRequest = (request: http.IncomingMessage, response: http.ServerResponse, entry: Entry) => {
    // A form cannot send JSON without a CORS preflight, which this server never grants.
    if (!request.headers["content-type"]?.startsWith("application/json")) {
      throw new InspectorError(415, "send the edits as application/json");
    }
    const chunks: Buffer[] = [];
    let size = 0;
    request.on("data", (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size <= MAX_REPLAY_JSON) chunks.push(chunk);
    });
    request.on("end", () => {
      try {
        if (size > MAX_REPLAY_JSON) throw new InspectorError(413, `the edits are ${size} bytes; the limit is ${MAX_REPLAY_JSON}`);
        let value: unknown = {};
        const body = Buffer.concat(chunks).toString("utf8");
        if (body.trim()) {
          try {
            value = JSON.parse(body);
          } catch {
            throw new InspectorError(400, "the edits are not JSON");
          }
        }
        const origin = origins.get(entry.tunnel);
        if (!origin) throw new InspectorError(409, `tunnel ${entry.tunnel} is not one of this agent's now`);
        answer(response, 202, { id: replay(recorder, origin, entry, readEdits(value)) });
      } catch (error) {
        answer(response, error instanceof InspectorError ? error.status : 500, { error: (error as Error).message });
      }
    });
  };

  const events = (request: http.IncomingMessage, response: http.ServerResponse) => {
    response.writeHead(200, { ...SECURITY, "content-type": "text/event-stream", "cache-control": "no-store" });
    response.write("retry: 1000\n\n");
    clients.add(response);
    const stop = recorder.subscribe((change) => {
      if (typeof change === "number") response.write(`event: evict\ndata: ${change}\n\n`);
      else response.write(`event: entry\ndata: ${JSON.stringify(summary(change))}\n\n`);
    });
    // Comments keep proxies and the browser from timing the stream out.
    const keepAlive = setInterval(() => response.write(": keep-alive\n\n"), 15_000);
    request.on("close", () => {
      stop();
      clearInterval(keepAlive);
      clients.delete(response);
    });
  };

  for (let tries = 0; tries < PORT_TRIES; tries++, port++) {
    if (originPorts.has(port)) continue;
    const denied = listenDenied?.(address.host, port);
    if (denied) return off(`cannot listen on ${address.host}:${port}: ${denied}`, "grant it with --allow-net");
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once("error", resolve);
      server.listen(port, address.host, () => {
        server.off("error", resolve);
        resolve(undefined);
      });
    });
    if (!error) {
      const shown = address.host.includes(":") ? `[${address.host}]` : address.host;
      const url = `http://${shown}:${port}`;
      if (!LOOPBACK.has(address.host)) {
        log.warn(
          `the inspector listens on ${url}: anyone who can reach this machine there can read this tunnel's requests and replay them`,
        );
      }
      return {
        url,
        recorder,
        close: () => {
          for (const client of clients) client.destroy();
          server.close();
        },
      };
    }
    if (error.code !== "EADDRINUSE" && error.code !== "EACCES") {
      return off(
        `cannot listen on ${address.host}:${port} (${error.code ?? error.message})`,
        "choose another address with --inspect",
      );
    }
  }
  return off(`found ports ${address.port} to ${address.port + PORT_TRIES - 1} taken`, "choose a free one with --inspect PORT");
}

const SECURITY = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; form-action 'none'; base-uri 'none'",
};

function text(response: http.ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, { ...SECURITY, "content-type": type, "cache-control": "no-store" });
  response.end(body);
}

function answer(response: http.ServerResponse, status: number, value: unknown): void {
  if (response.headersSent) return void response.end();
  text(response, status, "application/json; charset=utf-8", JSON.stringify(value));
}
