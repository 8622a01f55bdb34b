import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { canCut, cutConnections } from "../_cut.ts";
import { memory } from "../_memory.ts";
import { Origin } from "../_origin.ts";
import { Child, freePort } from "../_process.ts";
import { StallingProxy } from "../_proxy.ts";
import { Relay, ROOT } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";

// Faults injected into real parts (a proxy that goes silent, the relay, the origin, an agent
// that stays away too long, a cut every few seconds under mixed traffic), and a count of what
// each one costs a visitor.

const cuttable = await canCut();
if (!cuttable) {
  const message = "!!! SKIPPING the fault tests: aborting connections with `ss -K` needs root and iproute2";
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
}

const MB = 1024 * 1024;
const LONG = process.env.BURROW_LONG_TESTS === "1";
const SOAK_MS = LONG ? 600_000 : 60_000;
const CUT_EVERY_MS = LONG ? 30_000 : 10_000;

/** Resolves after `ms`: only for pacing traffic, never to wait for an outcome. */
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `url` with its port replaced: a tunnel's URL as seen through a proxy, reached on the relay. */
function onPort(url: string, port: number): string {
  const moved = new URL(url);
  moved.port = String(port);
  return moved.href;
}

/** Opens a visitor WebSocket to `path` on the tunnel at `base`, dialing 127.0.0.1 with its Host. */
async function openSocket(base: string, path: string): Promise<WebSocket> {
  const target = new URL(at(base, path).replace(/^http/, "ws"));
  const host = target.host;
  target.hostname = "127.0.0.1";
  const socket = new WebSocket(target.href, { headers: { host } });
  await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
  return socket;
}

/** Resolves when `check()` holds, polling every 20 ms, or rejects after `ms`. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`${what} did not happen within ${ms}ms`);
    await pause(20);
  }
}

/** The summed RSS of `pids`. */
const rss = (pids: number[]) => pids.reduce((sum, pid) => sum + memory(pid).rss, 0);
const mb = (bytes: number) => `${(bytes / MB).toFixed(0)} MB`;

/**
 * A download on an 8 MB/s visitor link, settled as what a visitor would see of it: the error that broke it off,
 * or "a whole body of N bytes".
 */
function downloadOutcome(url: string): Promise<string> {
  return download(url, 8e6).then(
    (result) => `a whole body of ${result.length} bytes`,
    (error: Error) => error.message,
  );
}

describe.skipIf(!cuttable)("what faults cost a visitor", () => {
  let relay: Relay;
  let origin: Origin;
  const relayPids = () => relay.processes();

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it.each(["websocket", "https"] as const)(
    "over %s, notices a proxy that silently stops forwarding within a few heartbeats, and the download goes on whole",
    async (transport) => {
      const proxy = await StallingProxy.start(relay.port);
      const agent = await AgentProcess.start("node", [
        ...tunnelArgs(origin.port, { url: `http://localhost:${proxy.port}` }, `faults-stall-${transport}`),
        "--heartbeat",
        "1",
        "--transport",
        transport,
      ]);
      try {
        const url = onPort(agent.url, relay.port);
        const size = 48 * MB;
        let done = false;
        const transfer = download(at(url, `/pattern/${size}`), 16e6).finally(() => {
          done = true;
        });
        // Let the download get going through the proxy, then stall it.
        expect((await visit(at(url, "/echo?before"))).status).toBe(200);
        await pause(500);
        expect(done).toBe(false);
        const from = agent.lines.length;
        const stalledAt = performance.now();
        // The WebSocket, or the HTTPS transport's poll and its kept-alive sends.
        expect(proxy.stall()).toBeGreaterThanOrEqual(1);
        await agent.waitFor(/connection lost \(the relay stopped answering heartbeats\)/, { from, timeoutMs: 10_000 });
        const detected = performance.now() - stalledAt;
        await agent.waitFor(/is up: .*; its streams go on \(\d+ open\)/, { from, timeoutMs: 10_000 });
        const resumed = performance.now() - stalledAt;
        const result = await transfer;
        console.log(
          `silent proxy (${transport}): noticed after ${(detected / 1000).toFixed(1)}s (heartbeat 1s), resumed after ${(resumed / 1000).toFixed(1)}s`,
        );
        expect(result).toMatchObject({ status: 200, length: size, sha256: patternHash(size) });
        // 2.5 silent heartbeats, checked once a heartbeat: between 2.5 and 4 s.
        expect(detected).toBeGreaterThan(2_000);
        expect(detected).toBeLessThan(5_000);
        if (transport === "websocket") expect(proxy.connections).toBe(2);
        expect((await visit(at(url, "/echo?after"))).status).toBe(200);
      } finally {
        await agent.stop("SIGINT");
        await proxy.close();
      }
    },
    60_000,
  );

  it("after a relay restart, visitors in flight see a failure, the agent starts a new session, and the tunnel serves again at once", async () => {
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "faults-restart"));
    try {
      const size = 64 * MB;
      const transfer = downloadOutcome(at(agent.url, `/pattern/${size}`));
      const socket = await openSocket(agent.url, "/ws/echo");
      const closed = new Promise<number>((resolve) => socket.once("close", resolve));
      socket.on("error", () => {});
      socket.send("before");
      await new Promise((resolve) => socket.once("message", resolve));
      const from = agent.lines.length;
      // A crash, not a redeploy: workerd sent SIGTERM lets requests in flight finish first.
      await relay.restart("SIGKILL");
      const readyAt = performance.now();
      // The visitor's download broke off and its WebSocket closed abnormally.
      const outcome = await transfer;
      expect(outcome).toMatch(/aborted|broke off|socket hang up|ECONNRESET/);
      expect(await closed).toBe(1006);
      const answer = await visit(at(agent.url, "/echo?after-restart"));
      const service = performance.now() - readyAt;
      expect(answer.status).toBe(200);
      await agent.waitFor(/connection lost/, { from });
      const up = await agent.waitFor(/^tunnel \S+ is up: .*$/, { from });
      console.log(`relay restart: a new request was served ${(service / 1000).toFixed(2)}s after the relay was back`);
      expect(up[0], "the session was not resumed").not.toMatch(/its streams go on/);
      expect(service).toBeLessThan(3_000);
    } finally {
      await agent.stop("SIGINT");
    }
  }, 60_000);

  it("after an origin restart, the download in flight fails visibly, the agent stays connected, and the next request succeeds", async () => {
    const port = await freePort();
    const start = async () => {
      const child = new Child(
        "origin",
        process.execPath,
        ["--import", "./scripts/register-ts.js", join(ROOT, "test/_origin-main.ts"), String(port)],
        { cwd: ROOT },
      );
      await child.waitFor(/origin listening on/);
      return child;
    };
    let child = await start();
    const agent = await AgentProcess.start("node", tunnelArgs(port, relay, "faults-origin"));
    try {
      const size = 64 * MB;
      const transfer = downloadOutcome(at(agent.url, `/pattern/${size}`));
      expect((await visit(at(agent.url, "/echo?before"))).status).toBe(200);
      await pause(500);
      const from = agent.lines.length;
      // A crash: no goodbye to the connections it holds.
      await child.stop("SIGKILL");
      const outcome = await transfer;
      expect(outcome).toMatch(/aborted|broke off|socket hang up|ECONNRESET/);
      child = await start();
      const backAt = performance.now();
      const answer = await visit(at(agent.url, "/echo?after-origin-restart"));
      const service = performance.now() - backAt;
      console.log(`origin restart: a new request was served ${(service * 1).toFixed(0)}ms after the origin was back`);
      expect(answer.status).toBe(200);
      expect(service).toBeLessThan(2_000);
      expect(agent.lines.slice(from).filter((line) => /connection lost/.test(line))).toEqual([]);
    } finally {
      await agent.stop("SIGINT");
      await child.stop("SIGTERM");
    }
  }, 60_000);

  it("ends the streams of an agent that does not come back within RESUME_SECONDS, turns visitors away, and serves again as a new session", async () => {
    const short = await Relay.start({ launcher: "workerd", vars: { RESUME_SECONDS: "2" } });
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, short, "faults-away"));
    try {
      const size = 64 * MB;
      const transfer = downloadOutcome(at(agent.url, `/pattern/${size}`));
      expect((await visit(at(agent.url, "/echo?before"))).status).toBe(200);
      await pause(300);
      const from = agent.lines.length;
      agent.signalGroup("SIGSTOP");
      let stopped = true;
      try {
        // Stopped, the agent cannot notice the cut nor reconnect.
        expect(await cutConnections(agent.runtimePid, short.port)).toBe(1);
        const cutAt = performance.now();
        const outcome = await transfer;
        const failedAfter = performance.now() - cutAt;
        expect(outcome).toMatch(/aborted|broke off|socket hang up|ECONNRESET/);
        // The session waited its 2 s for the agent, no less.
        expect(failedAfter).toBeGreaterThan(1_500);
        expect(failedAfter).toBeLessThan(6_000);
        const turnedAway = await visit(at(agent.url, "/echo?while-away"));
        const turnedAwayAfter = performance.now() - cutAt;
        expect(turnedAway.status).toBe(502);
        expect(turnedAway.headers["x-burrow-error"]).toMatch(/^(agent-offline|agent-disconnected)$/);
        // A visitor waits for a dropped agent up to 10 s after the drop (AGENT_RETURN_WAIT_MS in
        // edge/src/core/tunnel.ts), even past a shorter RESUME_SECONDS: the agent may come back anew.
        expect(turnedAwayAfter).toBeLessThan(12_000);
        console.log(
          `agent away: download failed ${(failedAfter / 1000).toFixed(1)}s after the cut (RESUME_SECONDS 2); a new visitor got ${turnedAway.headers["x-burrow-error"]} ${(turnedAwayAfter / 1000).toFixed(1)}s after it`,
        );
        agent.signalGroup("SIGCONT");
        stopped = false;
        const up = await agent.waitFor(/^tunnel \S+ is up: .*$/, { from });
        expect(up[0], "a new session").not.toMatch(/its streams go on/);
        expect((await visit(at(agent.url, "/echo?back"))).status).toBe(200);
      } finally {
        if (stopped) agent.signalGroup("SIGCONT");
      }
    } finally {
      await agent.stop("SIGINT");
      await short.dispose();
    }
  }, 60_000);

  it(
    `carries mixed traffic for ${SOAK_MS / 1000}s with a cut every ${CUT_EVERY_MS / 1000}s, losing nothing, with bounded memory`,
    async () => {
      const agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "faults-soak"));
      try {
        const agentBefore = memory(agent.runtimePid).rss;
        const relayBefore = rss(relayPids());
        const failures: string[] = [];
        const counts = { downloads: 0, uploads: 0, small: 0, events: 0, messages: 0, cuts: 0 };
        /** RSS of the agent and of workerd at each cut. */
        const series: [number, number][] = [];
        const endAt = performance.now() + SOAK_MS;
        const running = () => performance.now() < endAt;
        const loop = async (what: string, step: () => Promise<void>) => {
          while (running()) {
            try {
              await step();
            } catch (error) {
              failures.push(`${what}: ${(error as Error).message}`);
            }
          }
        };
        const socket = await openSocket(agent.url, "/ws/echo");
        const echoed: string[] = [];
        socket.on("message", (data) => echoed.push(data.toString()));
        let sent = 0;

        const traffic = Promise.all([
          loop("download", async () => {
            const size = 24 * MB + counts.downloads;
            const result = await download(at(agent.url, `/pattern/${size}`), 12e6);
            if (result.status !== 200 || result.sha256 !== patternHash(size)) throw new Error(`corrupted: ${result.status}`);
            counts.downloads++;
          }),
          loop("upload", async () => {
            const size = 8 * MB + counts.uploads;
            const result = await upload(at(agent.url, "/sink"), size);
            if (result.status !== 200) throw new Error(`status ${result.status}`);
            expect(JSON.parse(result.body)).toEqual({ length: size, sha256: patternHash(size) });
            counts.uploads++;
            await pause(500);
          }),
          loop("small request", async () => {
            const answer = await visit(at(agent.url, `/echo?i=${counts.small}`));
            if (answer.status !== 200) throw new Error(`status ${answer.status}`);
            counts.small++;
            await pause(100);
          }),
          loop("sse", async () => {
            const answer = await visit(at(agent.url, "/sse?count=20&interval=50"));
            const expected = Array.from({ length: 20 }, (_, i) => `data: ${i + 1}\n\n`).join("");
            if (answer.status !== 200 || answer.body.toString() !== expected) throw new Error("an event stream came out wrong");
            counts.events += 20;
          }),
          loop("websocket", async () => {
            socket.send(`message ${sent++}`);
            await pause(200);
          }),
        ]);
        while (running()) {
          await pause(Math.min(CUT_EVERY_MS, Math.max(0, endAt - performance.now())));
          if (!running()) break;
          counts.cuts += (await cutConnections(agent.runtimePid, relay.port)) > 0 ? 1 : 0;
          series.push([memory(agent.runtimePid).rss, rss(relayPids())]);
        }
        await traffic;
        counts.messages = sent;
        await until(() => echoed.length >= sent, 10_000, "every WebSocket message echoed");
        expect(echoed).toEqual(Array.from({ length: sent }, (_, i) => `message ${i}`));
        expect(socket.readyState).toBe(WebSocket.OPEN);
        socket.close(1000);

        const agentAfter = memory(agent.runtimePid).rss;
        const relayAfter = rss(relayPids());
        console.log(
          `soak ${SOAK_MS / 1000}s: ${counts.cuts} cuts, ${counts.downloads} downloads, ${counts.uploads} uploads, ${counts.small} small requests, ${counts.events} events, ${counts.messages} WebSocket messages, ${failures.length} failures; agent RSS ${mb(agentBefore)} -> ${mb(agentAfter)}, workerd RSS ${mb(relayBefore)} -> ${mb(relayAfter)}; at each cut: agent ${series.map(([a]) => mb(a)).join(", ")}; workerd ${series.map(([, r]) => mb(r)).join(", ")}`,
        );
        expect(failures).toEqual([]);
        expect(counts.cuts).toBeGreaterThanOrEqual(Math.floor(SOAK_MS / CUT_EVERY_MS) - 1);
        expect(counts.downloads).toBeGreaterThan(0);
        expect(counts.uploads).toBeGreaterThan(0);
        expect(agentAfter - agentBefore, "agent RSS growth").toBeLessThan(100 * MB);
        // From cold, workerd grows by the working set of the transfers in flight (windows, buffers,
        // its heap) within the first cut or two, then holds: measured 49 MB cold, 130 MB at the first
        // cut, 160 MB at the last. A leak per cut or per request would keep climbing after warm-up.
        const relayWarm = series[0]?.[1] ?? relayBefore;
        expect(relayAfter - relayWarm, "workerd RSS growth after the first cut").toBeLessThan(100 * MB);
        expect(relayAfter - relayBefore, "workerd RSS growth from cold").toBeLessThan(200 * MB);
      } finally {
        await agent.stop("SIGINT");
      }
    },
    SOAK_MS + 60_000,
  );
});
