import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { memory, sampleRss } from "../_memory.ts";
import { Origin } from "../_origin.ts";
import { capabilitiesOf, Relay, type RelayLauncher } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, dialOptions, visit } from "../_visit.ts";

const MB = 1024 * 1024;
const BIG = 200 * MB;
/** Slower than the tunnel can go, so flow control has to hold the sender back. */
const SLOW = 40 * MB;

/** Resolves when `emitter` emits `event`, or rejects after `ms`. */
function once(emitter: NodeJS.EventEmitter, event: string, ms = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms}ms`)), ms);
    emitter.once(event, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * The hard traffic, run once per agent runtime: big bodies to slow readers with bounded memory,
 * unbuffered event streams, and cancellation in both directions.
 */
export function streamSuite(runtime: RuntimeName, relayLauncher: RelayLauncher = "workerd"): void {
  describe(`streams through a ${runtime} agent${relayLauncher === "workerd" ? "" : ` and the ${relayLauncher} relay`}`, () => {
    let relay: Relay;
    let origin: Origin;
    let agent: AgentProcess;

    const agentPid = () => agent.runtimePid;
    const relayPids = () => relay.processes();

    beforeAll(async () => {
      // workerd alone by default, as in production: wrangler dev's extra hops cost memory of their own.
      [relay, origin] = await Promise.all([Relay.start({ launcher: relayLauncher }), Origin.start()]);
      agent = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay, `flow-${runtime}`));
    }, 90_000);

    afterAll(async () => {
      await agent?.stop("SIGINT");
      await relay?.dispose();
      await origin?.close();
    });

    it("streams a 200 MB download to a slow visitor with bounded memory, and stays fair", async () => {
      const relayBefore = relayPids().reduce((sum, pid) => sum + memory(pid).rss, 0);
      const relayPeak = sampleRss(relayPids);
      try {
        let finished = false;
        const big = download(at(agent.url, `/pattern/${BIG}`), SLOW).finally(() => {
          finished = true;
        });
        // Small requests on the same tunnel get through while the big one is held back.
        for (let i = 0; i < 20; i++) {
          expect((await visit(at(agent.url, `/status/201?during=${i}`))).status).toBe(201);
        }
        expect(finished).toBe(false);
        const result = await big;
        expect(result).toMatchObject({ status: 200, length: BIG, sha256: patternHash(BIG) });
        expect(memory(agentPid()).peak, "agent peak RSS").toBeLessThan(150 * MB);
      } finally {
        expect(relayPeak.stop() - relayBefore, "relay RSS growth").toBeLessThan(100 * MB);
      }
    }, 60_000);

    it("streams a 200 MB upload to a slow origin with bounded memory", async () => {
      const relayBefore = relayPids().reduce((sum, pid) => sum + memory(pid).rss, 0);
      const relayPeak = sampleRss(relayPids);
      try {
        const result = await upload(at(agent.url, `/sink?rate=${SLOW}`), BIG);
        expect(result.status).toBe(200);
        expect(JSON.parse(result.body)).toEqual({ length: BIG, sha256: patternHash(BIG) });
        expect(memory(agentPid()).peak, "agent peak RSS").toBeLessThan(150 * MB);
      } finally {
        expect(relayPeak.stop() - relayBefore, "relay RSS growth").toBeLessThan(100 * MB);
      }
    }, 60_000);

    it("delivers each server-sent event as the origin writes it, unbuffered", async () => {
      let write: ((text: string) => void) | undefined;
      let end: (() => void) | undefined;
      origin.route("/events", (_request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
        response.flushHeaders();
        write = (text) => response.write(text);
        end = () => response.end();
      });
      const target = at(agent.url, "/events");
      const received: string[] = [];
      let arrived: (() => void) | undefined;
      const done = new Promise<number>((resolve, reject) => {
        http
          .get(dialOptions(target), (response) => {
            response.setEncoding("utf8");
            response.on("data", (text: string) => {
              received.push(text);
              arrived?.();
            });
            response.on("end", () => resolve(response.statusCode!));
          })
          .on("error", reject);
      });
      while (!write) await new Promise((resolve) => setTimeout(resolve, 10));
      // The origin writes the next event only after the visitor has the previous one: any
      // buffering on the way would stall this loop until the test times out.
      for (let i = 1; i <= 5; i++) {
        const got = new Promise<void>((resolve) => {
          arrived = resolve;
        });
        write(`id: ${i}\ndata: event ${i}\n\n`);
        await got;
        expect(received.join("")).toContain(`data: event ${i}\n\n`);
      }
      end!();
      expect(await done).toBe(200);
    });

    it("aborts the origin's response when the visitor disconnects mid-body", async () => {
      const closed = new Promise<boolean>((resolve) => {
        origin.route("/forever", (_request, response) => {
          response.writeHead(200, { "content-type": "application/octet-stream" });
          const timer = setInterval(() => response.write(Buffer.alloc(16 * 1024)), 10);
          response.on("close", () => {
            clearInterval(timer);
            resolve(!response.writableFinished);
          });
        });
      });
      const target = at(agent.url, "/forever");
      const from = agent.lines.length;
      const request = http.get(dialOptions(target));
      request.on("error", () => {});
      const [response] = (await Promise.all([new Promise((resolve) => request.on("response", resolve))])) as [
        http.IncomingMessage,
      ];
      await once(response, "data");
      request.destroy();
      expect(await closed).toBe(true);
      await agent.waitFor(/^GET \/forever 200 \d+ms$/, { from });
    });

    it("aborts the origin's response when the visitor gave up before it started", async () => {
      // workerd notices a departed visitor only when it writes to the connection (it does not
      // fire Request.signal while waiting), so the origin's request lives until it answers.
      let arrived: (() => void) | undefined;
      let answer: (() => void) | undefined;
      const reached = new Promise<void>((resolve) => {
        arrived = resolve;
      });
      const closed = new Promise<boolean>((resolve) => {
        origin.route("/slow-start", (request, response) => {
          request.resume();
          answer = () => {
            response.writeHead(200, { "content-type": "application/octet-stream" });
            const timer = setInterval(() => response.write(Buffer.alloc(16 * 1024)), 10);
            response.on("close", () => {
              clearInterval(timer);
              resolve(!response.writableFinished);
            });
          };
          arrived!();
        });
      });
      const target = at(agent.url, "/slow-start");
      const request = http.get(dialOptions(target));
      request.on("error", () => {});
      await reached;
      request.destroy();
      answer!();
      expect(await closed).toBe(true);
    });

    it(
      "serves a response that starts late and then trickles for long, with heartbeats keeping the path alive",
      async () => {
        // BURROW_LONG_TESTS=1 runs the real durations: 5 minutes to start, then 10 minutes of events.
        const long = process.env.BURROW_LONG_TESTS === "1";
        const startAfter = long ? 5 * 60_000 : 1500;
        const streamFor = long ? 10 * 60_000 : 2000;
        origin.route("/late", (_request, response) => {
          setTimeout(() => {
            response.writeHead(200, { "content-type": "text/event-stream" });
            const started = Date.now();
            const timer = setInterval(
              () => {
                response.write(`data: ${Date.now() - started}\n\n`);
                if (Date.now() - started >= streamFor) {
                  clearInterval(timer);
                  response.end("data: done\n\n");
                }
              },
              Math.min(streamFor / 4, 30_000),
            );
          }, startAfter);
        });
        const beating = await AgentProcess.start(runtime, [
          ...tunnelArgs(origin.port, relay, `late-${runtime}`),
          ...["--heartbeat", long ? "20" : "0.2"],
        ]);
        try {
          const response = await visit(at(beating.url, "/late"));
          expect(response.status).toBe(200);
          expect(response.body.toString()).toMatch(/data: done\n\n$/);
          expect(beating.output).not.toMatch(/connection lost/);
        } finally {
          await beating.stop("SIGINT");
        }
      },
      process.env.BURROW_LONG_TESTS === "1" ? 20 * 60_000 : 30_000,
    );

    // workerd ends a chunked response cleanly when its body stream errors, so a visitor cannot
    // tell this truncation from a complete body: cloudflare/workerd#6818. With a Content-Length
    // the truncation is visible (see "fails a response visibly when the origin dies mid-body").
    // This test starts passing, and so fails here, once workerd aborts such responses; the
    // self-hosted relay aborts them already.
    (capabilitiesOf(relayLauncher).abortsChunkedBody ? it : it.fails)(
      "fails the visitor's response when the origin dies mid-body without a length",
      async () => {
        origin.route("/die-chunked", (_request, response) => {
          response.writeHead(200, { "content-type": "text/plain" });
          response.write("partial ");
          setTimeout(() => response.socket?.destroy(), 50);
        });
        await expect(visit(at(agent.url, "/die-chunked"))).rejects.toThrow();
      },
    );
  });
}
