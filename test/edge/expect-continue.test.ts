// `Expect: 100-continue` on plain `workerd serve`. workerd never sends an interim response: its
// HTTP server (capnproto's kj-http) has no 1xx support (capnproto/capnproto#2749 would add it),
// so a client that waits for `100 Continue` before sending its body waits until it gives up.
// curl sends the header for bodies over 1 MB and waits 1 s: a 2 MB POST through a tunnel takes
// about 1.03 s against 0.06 s with `-H 'Expect:'`. Node's http, browsers and most clients never
// send it. Production Cloudflare may differ; this is the local runtime (see docs/known-limits.md).
import { once } from "node:events";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { blob, sha256 } from "../_bytes.ts";
import { Origin } from "../_origin.ts";
import { Relay } from "../_relay.ts";

const SIZE = 2 * 1024 * 1024;

/** A raw connection to the relay that has sent a POST /echo head with `Expect: 100-continue`. */
async function postHead(port: number, host: string, size: number): Promise<{ socket: net.Socket; received: () => Buffer }> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  let bytes = Buffer.alloc(0);
  socket.on("data", (chunk: Buffer) => {
    bytes = Buffer.concat([bytes, chunk]);
  });
  socket.on("error", () => {});
  socket.write(
    [
      "POST /echo HTTP/1.1",
      `Host: ${host}`,
      "Content-Type: application/octet-stream",
      `Content-Length: ${size}`,
      "Expect: 100-continue",
      "",
      "",
    ].join("\r\n"),
  );
  return { socket, received: () => bytes };
}

/** Waits until `test()` holds or `ms` pass; resolves with whether it held. */
async function within(ms: number, test: () => boolean): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!test()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/**
 * The final response in `bytes` (1xx skipped, a chunked body decoded), or undefined while it is
 * incomplete. workerd keeps the connection open for seconds after it, `Connection: close` or not.
 */
function finalResponse(bytes: Buffer): { status: number; body: Buffer } | undefined {
  let rest = bytes;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const head = rest.subarray(0, end).toString("latin1");
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    rest = rest.subarray(end + 4);
    if (status >= 100 && status < 200) continue;
    const length = /^content-length:\s*(\d+)/im.exec(head)?.[1];
    if (length !== undefined)
      return rest.length >= Number(length) ? { status, body: rest.subarray(0, Number(length)) } : undefined;
    if (!/^transfer-encoding:\s*chunked/im.test(head)) throw new Error(`neither a length nor chunked: ${head}`);
    const parts: Buffer[] = [];
    for (;;) {
      const line = rest.indexOf("\r\n");
      if (line < 0) return undefined;
      const size = Number.parseInt(rest.subarray(0, line).toString("latin1"), 16);
      if (size === 0) return { status, body: Buffer.concat(parts) };
      if (rest.length < line + 2 + size + 2) return undefined;
      parts.push(rest.subarray(line + 2, line + 2 + size));
      rest = rest.subarray(line + 2 + size + 2);
    }
  }
}

describe("Expect: 100-continue on plain workerd", () => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;
  let host: string;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
    agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "expect"));
    host = new URL(agent.url).host;
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  // Fails today: workerd sends no interim responses (capnproto/capnproto#2749). When this starts
  // passing (and so fails here), workerd has learnt `100 Continue`: turn it into a plain `it`, and
  // remove the Expect entry from docs/known-limits.md (and the note in bench/run.ts).
  it.fails("answers 100 Continue within 500 ms, before the body is sent", async () => {
    const { socket, received } = await postHead(relay.port, host, SIZE);
    try {
      const continued = await within(500, () => /^HTTP\/1\.1 100 /.test(received().toString("latin1")));
      expect(continued).toBe(true);
    } finally {
      socket.destroy();
    }
  });

  it("answers once the client stops waiting and sends the body, which reaches the origin whole", async () => {
    const body = blob(SIZE);
    const { socket, received } = await postHead(relay.port, host, SIZE);
    try {
      // curl's wait; nothing final may arrive before the body (a 100 would be welcome).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(received().toString("latin1")).not.toMatch(/^HTTP\/1\.1 [2-5]\d\d /m);
      socket.write(body);
      expect(await within(10_000, () => finalResponse(received()) !== undefined)).toBe(true);
      const response = finalResponse(received())!;
      expect(response.status).toBe(200);
      const echoed = JSON.parse(response.body.toString());
      expect(echoed).toMatchObject({ method: "POST", length: SIZE, sha256: sha256(body) });
    } finally {
      socket.destroy();
    }
  });
});
