// The agent's own HTTP/1.1 client for plain-http origins (agent/src/net/http1.ts), against a
// raw TCP server that answers with crafted bytes: framing of both bodies, keep-alive reuse, and
// every malformed answer failing its request alone, with a cause.
import { once } from "node:events";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Http1Client } from "../../agent/src/net/http1.ts";

/** One connection as the origin sees it: the bytes it got, and a way to answer. */
interface Conn {
  socket: Socket;
  /** Everything received so far, latin1. */
  text: () => string;
  /** Resolves once `pattern` is in what was received. */
  until: (pattern: RegExp | string) => Promise<string>;
}

let server: Server;
let port: number;
const accepted: Conn[] = [];
const waiting: ((conn: Conn) => void)[] = [];

beforeAll(async () => {
  server = createServer((socket) => {
    let text = "";
    const wake: (() => void)[] = [];
    socket.on("data", (chunk) => {
      text += chunk.toString("latin1");
      for (const fn of wake.splice(0)) fn();
    });
    socket.on("error", () => {});
    const conn: Conn = {
      socket,
      text: () => text,
      until: async (pattern) => {
        const found = () => (typeof pattern === "string" ? text.includes(pattern) : pattern.test(text));
        while (!found()) await new Promise<void>((resolve) => wake.push(resolve));
        return text;
      },
    };
    accepted.push(conn);
    waiting.shift()?.(conn);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as { port: number }).port;
});

afterAll(() => {
  for (const conn of accepted) conn.socket.destroy();
  server.close();
});

/** The next connection the client opens. */
function nextConnection(): Promise<Conn> {
  return new Promise((resolve) => waiting.push(resolve));
}

interface Result {
  status?: number;
  headers?: string[];
  body: Buffer;
  ended: boolean;
  failed?: { code: string; message: string };
}

/** Sends a request; `done` resolves when it ended or failed. */
function send(
  client: Http1Client,
  method: string,
  headers: [string, string][] = [],
  body: (Buffer | string)[] | null = null,
  target = "/",
) {
  const result: Result = { body: Buffer.alloc(0), ended: false };
  let finish: () => void;
  const done = new Promise<Result>((resolve) => {
    finish = () => resolve(result);
  });
  const exchange = client.request(method, target, [["host", "origin"], ...headers], {
    head: (status, raw) => {
      result.status = status;
      result.headers = raw;
    },
    data: (bytes) => {
      result.body = Buffer.concat([result.body, bytes]);
    },
    end: () => {
      result.ended = true;
      finish();
    },
    fail: (code, message) => {
      result.failed = { code, message };
      finish();
    },
  });
  for (const part of body ?? []) exchange.write(Buffer.from(part), () => {});
  exchange.end();
  return { exchange, done };
}

/** Writes `bytes` one at a time, as a slow network would deliver them. */
async function trickle(socket: Socket, bytes: string): Promise<void> {
  for (const byte of bytes) {
    socket.write(byte, "latin1");
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** A new client, one GET sent on it, and the origin's end of the connection once the head came. */
async function started(method = "GET", headers: [string, string][] = []) {
  const client = new Http1Client("127.0.0.1", port);
  const connected = nextConnection();
  const request = send(client, method, headers);
  const conn = await connected;
  await conn.until("\r\n\r\n");
  return { client, request, conn };
}

describe("the origin's answer", () => {
  it("is read by Content-Length, and the connection serves the next request", async () => {
    const { client, request: first, conn } = await started();
    expect(conn.text()).toBe("GET / HTTP/1.1\r\nhost: origin\r\n\r\n");
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Two: a\r\nX-Two: b\r\n\r\nhello");
    const answer = await first.done;
    expect(answer).toMatchObject({ status: 200, ended: true, headers: ["Content-Length", "5", "X-Two", "a", "X-Two", "b"] });
    expect(answer.body.toString()).toBe("hello");
    const before = accepted.length;
    const second = send(client, "GET", [], null, "/again");
    await conn.until("GET /again");
    conn.socket.write("HTTP/1.1 204 No Content\r\n\r\n");
    expect(await second.done).toMatchObject({ status: 204, ended: true });
    expect(accepted.length).toBe(before);
    client.close();
  });

  it("is read chunked, with extensions and trailers, when it arrives a byte at a time", async () => {
    const { client, request, conn } = await started();
    await trickle(
      conn.socket,
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=x\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    const answer = await request.done;
    expect(answer).toMatchObject({ status: 200, ended: true });
    expect(answer.body.toString()).toBe("hello 0123456789");
    client.close();
  });

  it("is not held up by a pause that comes after it ended: the connection serves the next request", async () => {
    // The forwarder's flow control may pause an exchange whose last bytes it still holds for
    // the relay, after the response ended and its connection went back to the pool.
    const { client, request, conn } = await started();
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    await request.done;
    request.exchange.pause();
    const before = accepted.length;
    const second = send(client, "GET", [], null, "/next");
    await conn.until("GET /next");
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext");
    // Without the fix the answer never comes and the test times out: no race with a clock.
    const answer = await second.done;
    expect(answer.body.toString()).toBe("next");
    expect(accepted.length).toBe(before);
    request.exchange.resume();
    client.close();
  });

  it("follows Transfer-Encoding over a Content-Length sent with it, which is not passed on", async () => {
    const chunked = await started();
    chunked.conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    const answer = await chunked.request.done;
    expect(answer.body.toString()).toBe("ok");
    expect(answer.headers).toEqual(["Transfer-Encoding", "chunked"]);
    chunked.client.close();
    // A coding other than chunked last: the body ends with the connection.
    const coded = await started();
    coded.conn.socket.end("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nlonger than 2");
    expect((await coded.request.done).body.toString()).toBe("longer than 2");
    coded.client.close();
  });

  it("has no body for HEAD, 204 and 304, whatever their fields say", async () => {
    const { client, request: head, conn } = await started("HEAD");
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    expect(await head.done).toMatchObject({ status: 200, ended: true, body: Buffer.alloc(0) });
    const cached = send(client, "GET", [["if-none-match", '"x"']]);
    await conn.until("if-none-match");
    conn.socket.write("HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n");
    expect(await cached.done).toMatchObject({ status: 304, ended: true, body: Buffer.alloc(0) });
    client.close();
  });

  it("skips interim answers (100, 103) for the final one", async () => {
    const { client, request, conn } = await started();
    conn.socket.write(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    const answer = await request.done;
    expect(answer).toMatchObject({ status: 200, ended: true, headers: ["Content-Length", "2"] });
    expect(answer.body.toString()).toBe("ok");
    client.close();
  });

  it("without a length, ends with the connection, which is not reused", async () => {
    const { client, request, conn } = await started();
    conn.socket.write("HTTP/1.0 200 OK\r\n\r\nuntil the end");
    conn.socket.end();
    const answer = await request.done;
    expect(answer).toMatchObject({ status: 200, ended: true });
    expect(answer.body.toString()).toBe("until the end");
    const again = nextConnection();
    send(client, "GET");
    await again;
    client.close();
  });

  it.each([
    ["a status line that is not HTTP/1.x", "HTTP/2 200 OK\r\n\r\n"],
    ["a header line that is not a field", "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"],
    ["a folded header line", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n"],
    ["two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"],
    ["a Content-Length that is not a number", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nab"],
    ["a chunk size that is not hexadecimal", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ["chunk data longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n"],
    ["a 101 to a request without an upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"],
  ])("fails with EPROTO, naming it, for %s", async (why, answer) => {
    const { client, request, conn } = await started();
    conn.socket.write(answer);
    const result = await request.done;
    expect(result.failed?.code).toBe("EPROTO");
    expect(result.failed?.message).toMatch(/malformed response/);
    expect(result.failed?.message.length).toBeGreaterThan(30);
    void why;
    client.close();
  });

  it.each([
    ["a Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n\r\n", "a"],
    ["chunks", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nextra", "a"],
    ["no body", "HTTP/1.1 204 No Content\r\n\r\nextra", ""],
  ])("stands when bytes nobody asked for follow it (after %s), but its connection is not reused", async (_, answer, body) => {
    const { client, request, conn } = await started();
    conn.socket.write(answer);
    const result = await request.done;
    expect(result).toMatchObject({ ended: true });
    expect(result.body.toString()).toBe(body);
    await once(conn.socket, "close");
    client.close();
  });

  it("fails a head larger than 256 KiB instead of buffering it", async () => {
    const { client, request, conn } = await started();
    conn.socket.write(`HTTP/1.1 200 OK\r\nX-Big: ${"a".repeat(300 * 1024)}`);
    expect((await request.done).failed).toMatchObject({ code: "EPROTO", message: expect.stringMatching(/262144 bytes/) });
    client.close();
  });

  it("fails ECLOSED when the origin closes mid-body", async () => {
    const { client, request, conn } = await started();
    conn.socket.end("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
    const result = await request.done;
    expect(result).toMatchObject({ status: 200, ended: false, failed: { code: "ECLOSED" } });
    client.close();
  });

  it("fails ECONNREFUSED where nothing listens", async () => {
    const free = createServer();
    free.listen(0, "127.0.0.1");
    await once(free, "listening");
    const unused = (free.address() as { port: number }).port;
    await new Promise((resolve) => free.close(resolve));
    const client = new Http1Client("127.0.0.1", unused);
    expect((await send(client, "GET").done).failed?.code).toBe("ECONNREFUSED");
    client.close();
  });
});

describe("the request", () => {
  it("goes again on a new connection when a reused one was closed by the origin, if it has no body", async () => {
    const { client, request: first, conn } = await started();
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    await first.done;
    // The origin's keep-alive timeout: it closes the idle connection as the next request goes.
    const fresh = nextConnection();
    conn.socket.destroy();
    const second = send(client, "GET", [], null, "/second");
    const retried = await fresh;
    await retried.until("GET /second");
    retried.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    expect(await second.done).toMatchObject({ status: 200, ended: true });
    client.close();
  });

  it("keeps a connection no longer than a second under the origin's Keep-Alive timeout", async () => {
    const { client, request, conn } = await started();
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=2\r\n\r\n");
    await request.done;
    // Kept for 1 s: the connection is closed by the agent before the origin would close it.
    const closed = once(conn.socket, "close");
    const since = performance.now();
    await closed;
    expect(performance.now() - since).toBeGreaterThan(900);
    // With timeout=1 there is no time to keep it at all.
    const next = nextConnection();
    const second = send(client, "GET");
    const conn2 = await next;
    await conn2.until("\r\n\r\n");
    conn2.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=1\r\n\r\n");
    await second.done;
    await once(conn2.socket, "close");
    client.close();
  });

  it("is not sent again when it is not idempotent: a body-less POST on a connection the origin closed fails", async () => {
    const { client, request: first, conn } = await started();
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    await first.done;
    conn.socket.destroy();
    const before = accepted.length;
    const post = await send(client, "POST", [], null, "/once").done;
    expect(post.failed?.code).toMatch(/ECLOSED|ECONNRESET|EPIPE/);
    expect(accepted.length).toBe(before);
    client.close();
  });

  it.each([
    ["GET, ended with no body", "GET", [], null, ""],
    ["POST, ended with no body", "POST", [], null, "content-length: 0"],
    ["POST with a Content-Length", "POST", [["content-length", "6"]], ["abc", "def"], "content-length: 6\r\n\r\nabcdef"],
    [
      "POST without a length",
      "POST",
      [],
      ["abc", "defgh"],
      "transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n",
    ],
  ] as const)("is framed as HTTP/1.1 says: %s", async (_, method, headers, body, expected) => {
    const client = new Http1Client("127.0.0.1", port);
    const connected = nextConnection();
    const request = send(client, method, [...headers] as [string, string][], body ? [...body] : null);
    const conn = await connected;
    const text = (await conn.until(body && !headers.length ? "0\r\n\r\n" : "\r\n\r\n")).toLowerCase();
    if (expected) expect(text).toContain(expected);
    else expect(text).not.toMatch(/content-length|transfer-encoding/);
    if (!body && !expected) expect(text.endsWith("\r\n\r\n")).toBe(true);
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(await request.done).toMatchObject({ status: 200, ended: true });
    client.close();
  });

  it("sends a GET whose End comes later without framing for a body, and fails a body that comes anyway", async () => {
    const client = new Http1Client("127.0.0.1", port);
    const connected = nextConnection();
    let failed: { code: string; message: string } | undefined;
    const exchange = client.request("GET", "/late", [["host", "o"]], {
      head() {},
      data() {},
      end() {},
      fail: (code, message) => {
        failed = { code, message };
      },
    });
    const conn = await connected;
    const text = await conn.until("\r\n\r\n");
    expect(text.toLowerCase()).not.toMatch(/transfer-encoding|content-length/);
    exchange.write(Buffer.from("GET /smuggled HTTP/1.1\r\nhost: o\r\n\r\n"), () => {});
    await once(conn.socket, "close");
    expect(conn.text()).not.toContain("smuggled");
    expect(failed).toMatchObject({ code: "EBODY" });
    client.close();
  });

  it("answered before its body was all sent, closes its connection rather than reuse it", async () => {
    const client = new Http1Client("127.0.0.1", port);
    const connected = nextConnection();
    const result: { status?: number } = {};
    const exchange = client.request(
      "POST",
      "/upload",
      [
        ["host", "o"],
        ["content-length", "100"],
      ],
      {
        head: (status) => {
          result.status = status;
        },
        data: () => {},
        end: () => {},
        fail: () => {},
      },
    );
    exchange.write(Buffer.from("partial"), () => {});
    const conn = await connected;
    await conn.until("partial");
    conn.socket.write("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    await once(conn.socket, "close");
    expect(result.status).toBe(401);
    client.close();
  });

  it.each([
    ["a header value with CR LF", "GET", "/", [["x-a", "1\r\nx-injected: 2"]]],
    ["a header name with a space", "GET", "/", [["x a", "1"]]],
    ["a target with a space", "GET", "/a b", []],
    ["a method that is not a token", "G(T", "/", []],
  ] as const)("is refused before any byte is sent, for %s", (_, method, target, headers) => {
    const client = new Http1Client("127.0.0.1", port);
    expect(() =>
      client.request(method, target, [...headers] as [string, string][], { head() {}, data() {}, end() {}, fail() {} }),
    ).toThrow(TypeError);
    client.close();
  });
});
