import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { canCut, cutConnections } from "../_cut.ts";
import { Origin } from "../_origin.ts";
import { Relay } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";

// A cut costs nothing: while big transfers, small requests and a visitor WebSocket are in
// flight, the agent's TCP connection to the relay is aborted again and again (`ss -K`, as a
// proxy that cuts would); everything arrives whole, by hash, and nothing fails.

const cuttable = await canCut();
if (!cuttable) {
  const message = "!!! SKIPPING the resume tests: aborting connections with `ss -K` needs root and iproute2";
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
}

const DOWN = 96 * 1024 * 1024;
const UP = 48 * 1024 * 1024;
const SMALL = 60;
/** A visitor on a 24 MB/s link: the download takes ~4 s, long enough for several cuts. */
const VISITOR_RATE = 24e6;

const cases: [RuntimeName, "websocket" | "https"][] = [
  ["node", "websocket"],
  ["bun", "websocket"],
  ["deno", "websocket"],
  ["node", "https"],
];

describe.skipIf(!cuttable)("streams across cut connections", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it.each(cases)(
    "on %s over %s, carries a download, an upload, small requests and a WebSocket whole through repeated cuts",
    async (runtime, transport) => {
      const agent = await AgentProcess.start(runtime, [
        ...tunnelArgs(origin.port, relay, `cut-${runtime}-${transport}`),
        "--transport",
        transport,
      ]);
      try {
        const target = new URL(at(agent.url, "/ws/echo").replace(/^http/, "ws"));
        const host = target.host;
        target.hostname = "127.0.0.1";
        const socket = new WebSocket(target.href, { headers: { host } });
        await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
        const echoed: string[] = [];
        socket.on("message", (data) => echoed.push(data.toString()));
        const socketClosed = new Promise<number>((resolve) => socket.once("close", resolve));

        const transfers = Promise.all([
          download(at(agent.url, `/pattern/${DOWN}`), VISITOR_RATE),
          upload(at(agent.url, "/sink"), UP),
          (async () => {
            const statuses: number[] = [];
            for (let i = 0; i < SMALL; i++) {
              statuses.push((await visit(at(agent.url, `/echo?i=${i}`))).status);
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
            return statuses;
          })(),
        ]);
        let done = false;
        void transfers.finally(() => {
          done = true;
        });
        // Cut the agent's connections to the relay every 700 ms while the transfers run, and
        // send a message on the visitor's WebSocket between cuts.
        let cuts = 0;
        let sent = 0;
        while (!done) {
          await new Promise((resolve) => setTimeout(resolve, 700));
          if (done) break;
          cuts += (await cutConnections(agent.runtimePid, relay.port)) > 0 ? 1 : 0;
          socket.send(`message ${sent++}`);
        }
        const [down, up, statuses] = await transfers;
        expect(cuts).toBeGreaterThanOrEqual(3);
        expect(down).toMatchObject({ status: 200, length: DOWN, sha256: patternHash(DOWN) });
        expect(JSON.parse(up.body)).toEqual({ length: UP, sha256: patternHash(UP) });
        expect(statuses).toEqual(new Array(SMALL).fill(200));
        // Every message came back, once each, in order, and the socket never closed.
        await new Promise<void>((resolve) => {
          const check = () => (echoed.length >= sent ? resolve() : setTimeout(check, 20));
          check();
        });
        expect(echoed).toEqual(Array.from({ length: sent }, (_, i) => `message ${i}`));
        expect(socket.readyState).toBe(WebSocket.OPEN);
        socket.close(1000);
        expect(await socketClosed).toBe(1000);
        if (transport === "websocket") {
          // Each cut was a reconnect that resumed the session, not a new one.
          const resumed = agent.lines.filter((line) => /is up: .*; its streams go on/.test(line));
          expect(resumed.length).toBeGreaterThanOrEqual(cuts - 1);
        }
      } finally {
        await agent.stop("SIGINT");
      }
    },
    90_000,
  );
});
