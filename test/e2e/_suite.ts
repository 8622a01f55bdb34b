import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { blob, Origin, sha256 } from "../_origin.ts";
import { Relay, type RelayLauncher } from "../_relay.ts";
import { at, dialOptions, type Visit, visit } from "../_visit.ts";

const MB = 1024 * 1024;

/** What the origin's /echo route reports about the request it received. */
interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | undefined>;
  length: number;
  sha256: string;
}

/**
 * The tunnel's behaviour as a visitor sees it, run once per agent runtime and once per relay: a
 * real relay (the Cloudflare relay, or `relay`), a real origin on node:http, and the agent as a
 * child process of `runtime`.
 */
export function tunnelSuite(runtime: RuntimeName, relayLauncher?: RelayLauncher): void {
  describe(`tunnel through a ${runtime} agent${relayLauncher ? ` and the ${relayLauncher} relay` : ""}`, () => {
    let relay: Relay;
    let origin: Origin;
    let agent: AgentProcess;
    const name = `e2e-${runtime}`;

    beforeAll(async () => {
      [relay, origin] = await Promise.all([
        Relay.start({ launcher: relayLauncher, vars: { RESPONSE_TIMEOUT_SECONDS: "3" } }),
        Origin.start(),
      ]);
      agent = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay, name));
    }, 90_000);

    /** The origin's JSON answer; on anything else, fails with what the visitor and the agent saw. */
    function json(response: Visit): Echo {
      if (response.status !== 200 || response.headers["content-type"] !== "application/json") {
        const tail = agent.lines.slice(-10).join("\n");
        throw new Error(
          `expected the origin's JSON, got ${response.status}: ${response.body.toString().slice(0, 500)}\nagent said:\n${tail}`,
        );
      }
      return JSON.parse(response.body.toString());
    }

    afterAll(async () => {
      await agent?.stop("SIGINT");
      await relay?.dispose();
      await origin?.close();
    });

    it("prints a subdomain URL on the relay's base domain", () => {
      expect(agent.url).toBe(`http://${name}.localhost:${relay.port}`);
    });

    it.each(["GET", "DELETE"])("forwards a %s with its path, query and headers", async (method) => {
      const response = await visit(at(agent.url, "/echo/a%20b?x=1&y=two"), { method, headers: { "x-custom": "kept" } });
      expect(response.status).toBe(200);
      const seen = json(response);
      expect(seen.method).toBe(method);
      expect(seen.url).toBe("/echo/a%20b?x=1&y=two");
      expect(seen.headers["x-custom"]).toBe("kept");
      expect(seen.headers.host).toBe(`localhost:${origin.port}`);
      expect(seen.headers["x-forwarded-host"]).toBe(`${name}.localhost:${relay.port}`);
      expect(seen.headers["x-forwarded-proto"]).toBe("http");
      expect(seen.headers["x-forwarded-for"]).toMatch(/127\.0\.0\.1|::1/);
    });

    it.each(["POST", "PUT"])("forwards a %s binary body intact", async (method) => {
      const body = blob(3 * MB + 17);
      const response = await visit(at(agent.url, "/echo"), { method, body });
      const seen = json(response);
      expect(seen).toMatchObject({ method, length: body.length, sha256: sha256(body) });
    });

    /** Sends `body` chunked (no Content-Length) with `method` to `path`. */
    function chunked(method: string, path: string, body: string): Promise<{ status: number; body: string }> {
      return new Promise((resolve, reject) => {
        const request = http.request({ ...dialOptions(at(agent.url, path)), method }, (response) => {
          let text = "";
          response.on("data", (chunk: Buffer) => {
            text += chunk;
          });
          response.on("end", () => resolve({ status: response.statusCode!, body: text }));
        });
        request.on("error", reject);
        request.setHeader("transfer-encoding", "chunked");
        request.end(body);
      });
    }

    it.each(["DELETE", "OPTIONS"])(
      "carries a %s's chunked body as its body, never as another request to the origin",
      async (method) => {
        // The body is a whole request: sent unframed after the head (as node:http wrote the body
        // of a GET, DELETE or OPTIONS without Content-Length), the origin would read it as a
        // second, smuggled request.
        const smuggled = `GET /status/299?smuggled=${method} HTTP/1.1\r\nhost: origin\r\n\r\n`;
        const answer = await chunked(method, "/echo", smuggled);
        expect(answer.status).toBe(200);
        expect(JSON.parse(answer.body)).toMatchObject({ method, length: smuggled.length });
        // A request that follows on the same connections finds the origin in step.
        expect(json(await visit(at(agent.url, "/echo?after=1"))).url).toBe("/echo?after=1");
        expect(origin.requests.map((r) => r.url)).not.toContain(`/status/299?smuggled=${method}`);
      },
    );

    it("refuses a GET with a body at the relay with 400, naming the cause, and the origin sees nothing", async () => {
      const before = origin.requests.length;
      const answer = await chunked("GET", "/echo?with-body", "a body");
      expect(answer.status).toBe(400);
      expect(answer.body).toMatch(/GET request cannot carry a body.*POST or PUT/);
      expect(origin.requests.slice(before).map((r) => r.url)).not.toContain("/echo?with-body");
      // A GET that says Content-Length: 0 has no body: it goes through.
      expect(json(await visit(at(agent.url, "/echo?empty"), { headers: { "content-length": "0" } })).url).toBe("/echo?empty");
    });

    it("answers HEAD with the origin's status and headers and no body", async () => {
      const response = await visit(at(agent.url, "/cookies"), { method: "HEAD" });
      expect(response.status).toBe(200);
      expect(response.body.length).toBe(0);
      expect(response.headers["set-cookie"]).toHaveLength(2);
    });

    it("drops the visitor's hop-by-hop headers", async () => {
      const response = await visit(at(agent.url, "/echo"), {
        headers: { te: "trailers", "proxy-authorization": "Basic eA==", "x-end": "kept" },
      });
      const seen = json(response);
      expect(seen.headers.te).toBeUndefined();
      expect(seen.headers["proxy-authorization"]).toBeUndefined();
      expect(seen.headers["x-end"]).toBe("kept");
    });

    it("drops the origin's hop-by-hop headers, including those named by Connection", async () => {
      const response = await visit(at(agent.url, "/hop"));
      expect(response.headers["x-origin-hop"]).toBeUndefined();
      expect(response.headers["keep-alive"]).toBeUndefined();
      expect(response.headers["x-end"]).toBe("kept");
    });

    it.each([201, 204, 304, 404, 418, 500, 503])("passes status %i through", async (status) => {
      const response = await visit(at(agent.url, `/status/${status}`));
      expect(response.status).toBe(status);
      expect(response.headers["x-burrow-error"]).toBeUndefined();
    });

    it("passes a redirect through without following it", async () => {
      const response = await visit(at(agent.url, "/redirect"));
      expect(response.status).toBe(302);
      expect(response.headers.location).toBe("/target?from=redirect");
    });

    it("keeps two Set-Cookie headers as two", async () => {
      const response = await visit(at(agent.url, "/cookies"));
      expect(response.headers["set-cookie"]).toEqual(["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"]);
    });

    it("passes a gzip body through as the origin encoded it", async () => {
      const response = await visit(at(agent.url, "/gzip"), { headers: { "accept-encoding": "gzip" } });
      expect(response.headers["content-encoding"]).toBe("gzip");
      const { gunzipSync } = await import("node:zlib");
      expect(gunzipSync(response.body).toString()).toBe("compressed hello ".repeat(100));
    });

    it("streams a 50 MB download intact, with its Content-Length where the relay's server keeps it", async () => {
      const response = await visit(at(agent.url, `/bytes/${50 * MB}`));
      expect(response.status).toBe(200);
      // Bun's server sends a streamed body chunked whatever its length (docs/relay-selfhosted.md).
      if (relay.can.contentLength) expect(response.headers["content-length"]).toBe(String(50 * MB));
      else expect(response.headers["transfer-encoding"]).toBe("chunked");
      expect(response.body.length).toBe(50 * MB);
      expect(sha256(response.body)).toBe(sha256(blob(50 * MB)));
    }, 60_000);

    it("streams a 50 MB upload intact", async () => {
      const body = blob(50 * MB);
      const response = await visit(at(agent.url, "/echo"), { method: "POST", body });
      expect(json(response)).toMatchObject({ length: body.length, sha256: sha256(body) });
    }, 60_000);

    it("streams a body back while it is still being uploaded", async () => {
      const body = blob(5 * MB);
      const response = await visit(at(agent.url, "/mirror"), { method: "POST", body });
      expect(sha256(response.body)).toBe(sha256(body));
    });

    it("serves 100 concurrent requests, each with its own answer", async () => {
      const responses = await Promise.all(
        Array.from({ length: 100 }, (_, i) => visit(at(agent.url, `/echo?i=${i}`), { method: "POST", body: blob(1000 + i) })),
      );
      responses.forEach((response, i) => {
        const seen = json(response);
        expect(seen.url).toBe(`/echo?i=${i}`);
        expect(seen.length).toBe(1000 + i);
      });
    });

    it("serves the same tunnel by path, with the prefix stripped", async () => {
      const base = `http://localhost:${relay.port}/t/${name}/`;
      const response = await visit(at(base, "/echo?via=path"));
      const seen = json(response);
      expect(seen.url).toBe("/echo?via=path");
      expect(seen.headers["x-forwarded-prefix"]).toBe(`/t/${name}`);
      const redirect = await visit(at(base, "/redirect"));
      expect(redirect.headers.location).toBe(`/t/${name}/target?from=redirect`);
    });

    it("only ever reaches its own origin, whatever the path says", async () => {
      const before = origin.requests.length;
      const response = await visit(at(agent.url, "/echo"), {});
      expect(response.status).toBe(200);
      const sneaky = await visit(`http://${name}.localhost:${relay.port}//127.0.0.1:1/echo`);
      expect(sneaky.status).toBe(404); // the origin's own 404 for that path: it went to the origin
      expect(origin.requests.length).toBe(before + 2);
      expect(origin.requests.at(-1)!.url).toBe("//127.0.0.1:1/echo");
    });

    it("fails a response visibly when the origin dies mid-body", async () => {
      await expect(visit(at(agent.url, "/truncate"))).rejects.toThrow();
    });

    it("answers 504 agent-timeout when the origin never answers", async () => {
      const response = await visit(at(agent.url, "/hang"));
      expect(response.status, response.body.toString()).toBe(504);
      expect(response.headers["x-burrow-error"]).toBe("agent-timeout");
      expect(response.body.toString()).toContain(`tunnel "${name}"`);
    });

    it("logs one line per request with method, path, status and duration", async () => {
      const from = agent.lines.length;
      await visit(at(agent.url, "/status/201?log=1"));
      await agent.waitFor(/^GET \/status\/201\?log=1 201 \d+ms$/, { from });
    });

    it("answers 502 origin-unreachable, naming the port, when the local server is down", async () => {
      const down = await AgentProcess.start(runtime, tunnelArgs("1", relay, `${name}-down`));
      try {
        const response = await visit(at(down.url, "/anything"));
        expect(response.status).toBe(502);
        expect(response.headers["x-burrow-error"]).toBe("origin-unreachable");
        expect(response.body.toString()).toMatch(/local server at http:\/\/localhost:1 is not answering/);
      } finally {
        await down.stop("SIGINT");
      }
    });

    it("reconnects after the relay restarts and serves again under the same name", async () => {
      const from = agent.lines.length;
      await relay.restart();
      const url = await agent.ready(from);
      expect(url).toBe(`http://${name}.localhost:${relay.port}`);
      const response = await visit(at(url, "/echo?after=restart"));
      expect(json(response).url).toBe("/echo?after=restart");
      expect(agent.output.slice(agent.lines.slice(0, from).join("\n").length)).toMatch(/reconnecting in \d/);
    }, 90_000);

    it("notices a relay that stopped answering heartbeats, and reconnects when it is back", async () => {
      const lively = await AgentProcess.start(runtime, [...tunnelArgs(origin.port, relay, `${name}-beat`), "--heartbeat", "0.2"]);
      try {
        const from = lively.lines.length;
        relay.freeze();
        try {
          await lively.waitFor(/connection lost \(the relay stopped answering heartbeats\); reconnecting in/, { from });
        } finally {
          relay.thaw();
        }
        const url = await lively.ready(from);
        expect(json(await visit(at(url, "/echo?beat=1"))).url).toBe("/echo?beat=1");
      } finally {
        await lively.stop("SIGINT");
      }
    });

    it("stops cleanly on Ctrl-C, and the relay then answers 502 agent-offline", async () => {
      const extra = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay, `${name}-bye`));
      // Twice, as a terminal's Ctrl-C reaches `deno task` and its child both.
      extra.signal("SIGINT");
      extra.signal("SIGINT");
      expect(await extra.exited).toBe(0);
      const response = await visit(at(extra.url, "/echo"));
      expect(response.status).toBe(502);
      expect(response.headers["x-burrow-error"]).toBe("agent-offline");
      // A clean stop frees the name at once for anyone.
      const next = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay, `${name}-bye`));
      await next.stop("SIGINT");
    });
  });
}
