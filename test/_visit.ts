import http from "node:http";
import type { Socket } from "node:net";

export interface Visit {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

export interface VisitOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /**
   * A connection of its own, closed after: for a request the server may refuse before reading
   * its body (a server then closes the connection, and a pooled one would be reused after).
   */
  fresh?: boolean;
}

/**
 * Request options that reach `url` the way a browser would, dialing 127.0.0.1 with the URL's
 * Host header: Node's resolver does not map *.localhost to loopback.
 */
export function dialOptions(url: string, headers: http.OutgoingHttpHeaders = {}): http.RequestOptions {
  const target = new URL(url);
  return {
    host: "127.0.0.1",
    port: target.port,
    path: target.pathname + target.search,
    headers: { host: target.host, ...headers },
  };
}

const pool = new http.Agent({ keepAlive: true, maxSockets: 128 });

const guarded = new WeakSet<Socket>();
/**
 * A server that answers before it has read a request's body (a 502, a 413) may reset the
 * connection while the body is still being written: the request has its answer and has let go
 * of the socket by then, so the write's ECONNRESET would be nobody's (an uncaught exception in
 * the test run). While a request holds the socket, its own error listener reports errors.
 */
function guard(socket: Socket): void {
  if (guarded.has(socket)) return;
  guarded.add(socket);
  socket.on("error", () => {});
}

/**
 * Requests `url` the way a browser would reach a tunnel, but dialing 127.0.0.1 with the URL's
 * Host header: Node's resolver does not map *.localhost to loopback.
 * Rejects if the response body breaks off before its end.
 */
export function visit(url: string, options: VisitOptions = {}): Promise<Visit> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { ...dialOptions(url, options.headers), method: options.method ?? "GET", agent: options.fresh ? false : pool },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () => {
          if (!response.complete) return reject(new Error("response ended before its body was complete"));
          resolve({
            status: response.statusCode!,
            headers: response.headers,
            rawHeaders: response.rawHeaders,
            body: Buffer.concat(chunks),
          });
        });
      },
    );
    request.on("socket", guard);
    request.on("error", (error: NodeJS.ErrnoException) => {
      // A kept-alive socket the server closed as it was reused (servers drop idle connections
      // after a few seconds; a busy test process sees the FIN late): the request never reached
      // the server, so it is sent again on a new connection, as Node's docs advise for
      // request.reusedSocket. Only for GET and HEAD, which are safe to send twice.
      const method = options.method ?? "GET";
      if (request.reusedSocket && error.code === "ECONNRESET" && (method === "GET" || method === "HEAD")) {
        visit(url, { ...options, fresh: true }).then(resolve, reject);
        return;
      }
      reject(error);
    });
    request.end(options.body);
  });
}

/** The public URL of `path` on a tunnel whose root URL is `base`. */
export function at(base: string, path: string): string {
  return new URL(path.replace(/^\//, ""), base.endsWith("/") ? base : `${base}/`).href;
}
