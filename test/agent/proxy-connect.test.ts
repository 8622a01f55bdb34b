import net from "node:net";
import { MAX_PROXY_AUTH_BODY, MAX_PROXY_AUTH_CONNECTIONS } from "@burrow/protocol";
import { afterEach, describe, expect, it } from "vitest";
import { type DialReport, dial, type NetConfig } from "../../agent/src/net/dial.ts";
import { proxyFor } from "../../agent/src/net/proxy.ts";

// The dial loop against scripted proxies on loopback, for what squid never does: closing after
// a 407, chunked or oversized 407 bodies, stale nonces forever. Each proxy sees the requests
// as they came, per connection; a 200 turns the connection into an echo tunnel.

interface Seen {
  connection: number;
  head: string;
  authorization: string | undefined;
}

type Answer = string | "tunnel";

const servers: net.Server[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

async function scriptedProxy(answer: (request: Seen, seen: Seen[]) => Answer): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  let connections = 0;
  const server = net.createServer((socket) => {
    const connection = ++connections;
    let buffer = "";
    socket.on("error", () => {});
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString("latin1");
      for (let end = buffer.indexOf("\r\n\r\n"); end >= 0; end = buffer.indexOf("\r\n\r\n")) {
        const head = buffer.slice(0, end);
        buffer = buffer.slice(end + 4);
        const request = { connection, head, authorization: /^Proxy-Authorization: (.*)$/im.exec(head)?.[1] };
        seen.push(request);
        const reply = answer(request, seen);
        if (reply === "tunnel") {
          socket.off("data", onData);
          socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
          socket.pipe(socket);
          return;
        }
        socket.write(reply);
        if (/^Connection: close/im.test(reply)) socket.end();
      }
    };
    socket.on("data", onData);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, seen };
}

const target = new URL("http://relay.example:443");

function config(proxyUrl: string, extra: Partial<NetConfig> = {}): NetConfig {
  return { proxy: proxyFor(target, proxyUrl, () => undefined), ca: [], insecure: false, timeoutMs: 5000, ...extra };
}

async function echoes(socket: net.Socket | import("node:stream").Duplex): Promise<string> {
  socket.write("ping");
  const answer = await new Promise<string>((resolve) => socket.once("data", (data: Buffer) => resolve(data.toString())));
  socket.destroy();
  return answer;
}

const challenge407 = (fields: string[], body = "", close = false) =>
  [
    "HTTP/1.1 407 Proxy Authentication Required",
    ...fields,
    ...(close ? ["Connection: close"] : []),
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");

/** An NTLM Type 2 token with no target info (as squid's ntlm_fake_auth sends). */
const TYPE2 = Buffer.concat([
  Buffer.from("NTLMSSP\0", "latin1"),
  Buffer.from([2, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0x05, 0x82, 0x08, 0xa2]),
  Buffer.alloc(8, 0x11),
  Buffer.alloc(8),
]).toString("base64");

describe("the dial loop through an authenticating proxy", () => {
  it("answers NTLM's challenge on the connection it came on, after skipping a chunked 407 body", async () => {
    const proxy = await scriptedProxy((request) => {
      if (!request.authorization)
        return challenge407(["Proxy-Authenticate: NTLM", "Proxy-Authenticate: Basic realm=x"], "denied");
      if (request.authorization.startsWith("NTLM TlRMTVNTUAAB")) {
        const body = "<html>challenge</html>";
        return [
          "HTTP/1.1 407 Proxy Authentication Required",
          `Proxy-Authenticate: NTLM ${TYPE2}`,
          "Transfer-Encoding: chunked",
          "",
          `${body.length.toString(16)};ext=1`,
          body,
          "0",
          "Trailer: x",
          "",
          "",
        ].join("\r\n");
      }
      return request.authorization.startsWith("NTLM TlRMTVNTUAAD") ? "tunnel" : challenge407(["Proxy-Authenticate: NTLM"]);
    });
    const report: DialReport = {};
    const socket = await dial(target, config(proxy.url.replace("//", "//CORP%5Calice:pw@")), report);
    expect(await echoes(socket)).toBe("ping");
    expect(proxy.seen.map((r) => r.connection)).toEqual([1, 1, 1]);
    expect(proxy.seen[1]!.head).toMatch(/^Proxy-Connection: keep-alive$/im);
    expect(report.proxyAuth).toEqual({ scheme: "NTLM", user: "CORP\\alice", attempts: 1, connections: 1 });
  });

  it("carries Basic credentials over to a new connection when the proxy closes after its 407", async () => {
    const proxy = await scriptedProxy((request) =>
      request.authorization === `Basic ${Buffer.from("alice:pw").toString("base64")}`
        ? "tunnel"
        : challenge407(['Proxy-Authenticate: Basic realm="corp"'], "", true),
    );
    const socket = await dial(target, config(proxy.url.replace("//", "//alice:pw@")));
    expect(await echoes(socket)).toBe("ping");
    expect(proxy.seen.map((r) => r.connection)).toEqual([1, 2]);
  });

  it("starts NTLM over on each new connection, and gives up after MAX_PROXY_AUTH_CONNECTIONS", async () => {
    const proxy = await scriptedProxy((request) =>
      request.authorization?.startsWith("NTLM TlRMTVNTUAAB")
        ? challenge407([`Proxy-Authenticate: NTLM ${TYPE2}`], "", true)
        : challenge407(["Proxy-Authenticate: NTLM"], "", true),
    );
    const attempt = dial(target, config(proxy.url.replace("//", "//alice:pw@")));
    await expect(attempt).rejects.toThrow(
      `closed the connection during the NTLM handshake ${MAX_PROXY_AUTH_CONNECTIONS} times (MAX_PROXY_AUTH_CONNECTIONS)`,
    );
    // Every connection after the first opened with a Type 1; no Type 3 ever left.
    expect(proxy.seen.filter((r) => r.authorization?.startsWith("NTLM TlRMTVNTUAAD"))).toEqual([]);
    expect(new Set(proxy.seen.map((r) => r.connection)).size).toBe(MAX_PROXY_AUTH_CONNECTIONS);
  });

  it("reads no more than MAX_PROXY_AUTH_BODY of a 407, and goes on on a new connection", async () => {
    const huge = "x".repeat(MAX_PROXY_AUTH_BODY + 1);
    const proxy = await scriptedProxy((request) =>
      request.authorization ? "tunnel" : challenge407(['Proxy-Authenticate: Basic realm="corp"'], huge),
    );
    const socket = await dial(target, config(proxy.url.replace("//", "//alice:pw@")));
    expect(await echoes(socket)).toBe("ping");
    expect(proxy.seen.map((r) => r.connection)).toEqual([1, 2]);
  });

  it("retries a stale Digest nonce once, then stops: 2 attempts, said in the error", async () => {
    let nonce = 0;
    const proxy = await scriptedProxy((request) =>
      challenge407([
        `Proxy-Authenticate: Digest realm="corp", nonce="n${nonce++}", qop="auth"${request.authorization ? ", stale=true" : ""}`,
      ]),
    );
    await expect(dial(target, config(proxy.url.replace("//", "//alice:pw@")))).rejects.toThrow(
      /refused the Digest credentials of user "alice" \(407 .*stopped after 2 attempts/,
    );
    expect(proxy.seen.filter((r) => r.authorization)).toHaveLength(2);
    expect(proxy.seen[1]!.authorization).toContain('uri="relay.example:443"');
  });

  it("lets parallel dials take turns until the proxy accepted one: a wrong password is sent once", async () => {
    const proxy = await scriptedProxy(() => challenge407(['Proxy-Authenticate: Basic realm="corp"']));
    const shared = config(proxy.url.replace("//", "//alice:wrong@"));
    const results = await Promise.allSettled([dial(target, shared), dial(target, shared), dial(target, shared)]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(proxy.seen.filter((r) => r.authorization)).toHaveLength(1);
    expect(String((results[2] as PromiseRejectedResult).reason.message)).toMatch(/refused the Basic credentials/);
  });

  it("names what the proxy offers when the agent speaks none of it, and asks for credentials when none were given", async () => {
    const bearer = await scriptedProxy(() => challenge407(["Proxy-Authenticate: Bearer realm=corp"]));
    await expect(dial(target, config(bearer.url))).rejects.toThrow(/offers Bearer, none of which this agent speaks/);
    const ntlm = await scriptedProxy(() => challenge407(["Proxy-Authenticate: NTLM"]));
    await expect(dial(target, config(ntlm.url))).rejects.toMatchObject({
      message: expect.stringMatching(/requires credentials \(407 .*NTLM needs a user name and a password/),
      hint: expect.stringMatching(/BURROW_PROXY_USER and BURROW_PROXY_PASSWORD/),
      fatal: true,
    });
  });

  it("takes credentials for a proxy from the settings when its URL has none", async () => {
    const proxy = await scriptedProxy((request) =>
      request.authorization ? "tunnel" : challenge407(["Proxy-Authenticate: Basic"]),
    );
    const credentialsFor = (host: string) => (host === "127.0.0.1" ? { user: "bob", password: "pw", source: "test" } : undefined);
    const socket = await dial(target, config(proxy.url, { credentialsFor }));
    expect(await echoes(socket)).toBe("ping");
    expect(proxy.seen[1]!.authorization).toBe(`Basic ${Buffer.from("bob:pw").toString("base64")}`);
  });
});
