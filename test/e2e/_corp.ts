import { readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime, type RuntimeName } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { CorpNetwork, type CorpOptions, CorpOrigin, CorpRelay, networkEnv, skipCorp } from "../_corp.ts";
import { executableLauncher } from "../_package.ts";
import type { RelayLauncher } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, dialOptions, visit } from "../_visit.ts";
import { deniedSince, proxyAuthBlocks } from "./_corp-auth.ts";

const MB = 1024 * 1024;
export const SIZE = 20 * MB;
/** Seconds between the proxy's cuts in the reconnection scenario (real proxies: often 30). */
const CUT_EVERY = 5;
const CUTS = 3;

const skip = skipCorp("the corporate-network tests");

let expectedHash: string | undefined;
export const sizeHash = () => {
  expectedHash ??= patternHash(SIZE);
  return expectedHash;
};

/** Server-sent events as they arrive: each event's data and when it arrived. */
function events(url: string): Promise<{ status: number; events: { data: string; at: number }[] }> {
  return new Promise((resolve, reject) => {
    http
      .get(dialOptions(url), (response) => {
        const seen: { data: string; at: number }[] = [];
        let buffer = "";
        response.setEncoding("utf8");
        response.on("data", (text: string) => {
          buffer += text;
          for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
            seen.push({ data: buffer.slice(0, end).replace(/^data: /, ""), at: performance.now() });
            buffer = buffer.slice(end + 2);
          }
        });
        response.on("error", reject);
        response.on("end", () => resolve({ status: response.statusCode!, events: seen }));
      })
      .on("error", reject);
  });
}

/** The transport the agent announced first (`transport: websocket` or `transport: https (...)`). */
export function transportOf(agent: AgentProcess): string | undefined {
  return agent.lines.map((line) => /^transport: (\S+)/.exec(line)?.[1]).find(Boolean);
}

/** Waits for `agent` to exit (it is expected to); fails if it keeps running. */
export async function exitOf(agent: AgentProcess, timeoutMs = 30_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the agent was still running after ${timeoutMs}ms:\n${agent.output}`)), timeoutMs);
  });
  try {
    return await Promise.race([agent.exited, timeout]);
  } finally {
    clearTimeout(timer);
    await agent.stop("SIGKILL");
  }
}

/**
 * The agent behind simulated corporate networks, run once per agent runtime: a network
 * namespace whose firewall lets out only port 443, or only a proxy (squid with Basic auth,
 * mitmproxy inspecting TLS, mitmproxy refusing WebSockets, squid cutting connections), with the
 * agent and the origin inside it and the relay (workerd, or `relayLauncher`: TLS on :443) outside.
 * Visitors reach the tunnel from the test process at the relay's plain-http port, by path. The executable
 * (`npm run build:binary`) gets the blocks marked `shared` only (proxies, --ca, both transports,
 * doctor): it is the Bun agent's code, which the whole suite covers.
 */
export function corpSuite(runtime: RuntimeName | "executable", relayLauncher: RelayLauncher = "workerd"): void {
  const full = runtime !== "executable";
  const shared = describe;
  const block = full ? describe : describe.skip;
  const against = relayLauncher === "workerd" ? "" : `, the ${relayLauncher} relay outside`;
  describe.skipIf(skip)(`a ${runtime} agent in corporate networks${against}`, () => {
    let relay: CorpRelay;
    let agentRuntime: AgentRuntime;

    beforeAll(async () => {
      relay = await CorpRelay.start({ launcher: relayLauncher });
      // The executable alone in a directory; the PATH stays, for `ip netns exec` to be found.
      agentRuntime = full ? runtime : executableLauncher(inject("agentExecutable"), { keepPath: true });
    }, 90_000);

    afterAll(async () => {
      await relay?.dispose();
      if (agentRuntime && typeof agentRuntime !== "string") rmSync(agentRuntime.cwd, { recursive: true, force: true });
    });

    /** A network with an origin inside, and agents started in it (all torn down after the block). */
    function corp(options: CorpOptions | (() => CorpOptions)) {
      const context = {
        network: undefined as unknown as CorpNetwork,
        origin: undefined as unknown as CorpOrigin,
        agents: [] as AgentProcess[],
        /** An agent in the network for the origin, as tunnel `name`. Not yet waited for. */
        spawn(name: string, args: string[], env: Record<string, string> = {}): AgentProcess {
          const argv = ["--port", String(context.origin.port), "--relay", relay.url, "--name", name, ...args];
          const agent = new AgentProcess(agentRuntime, argv, networkEnv(env), { netns: context.network.ns });
          context.agents.push(agent);
          return agent;
        },
        /** Like spawn, and resolves once the tunnel is up. */
        async start(name: string, args: string[], env?: Record<string, string>): Promise<AgentProcess> {
          const agent = context.spawn(name, args, env);
          await agent.ready();
          return agent;
        },
        /** `agent doctor` in the network, to its end. */
        async doctor(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; output: string }> {
          const agent = new AgentProcess(agentRuntime, ["doctor", "--relay", relay.url, ...args], networkEnv(env), {
            netns: context.network.ns,
          });
          context.agents.push(agent);
          return { status: await exitOf(agent), output: agent.output };
        },
      };
      beforeAll(async () => {
        context.network = await CorpNetwork.create(typeof options === "function" ? options() : options);
        context.origin = await CorpOrigin.start(context.network);
      }, 60_000);
      afterAll(async () => {
        await Promise.all(context.agents.map((agent) => agent.stop("SIGINT")));
        await context.network?.dispose();
      });
      return context;
    }

    /**
     * What a visitor does through the tunnel `name`: a 20 MB download and a 20 MB upload, both
     * checked by sha256, and server-sent events that arrive one by one, not all at the end.
     */
    async function serves(name: string, agent: AgentProcess): Promise<void> {
      const base = relay.visitorUrl(name);
      const tail = () => `\nagent said:\n${agent.lines.slice(-15).join("\n")}`;
      const down = await download(at(base, `/pattern/${SIZE}`));
      expect(down, `download${tail()}`).toMatchObject({ status: 200, length: SIZE, sha256: sizeHash() });
      const up = await upload(at(base, "/sink"), SIZE);
      expect(up.status, `upload: ${up.body.slice(0, 300)}${tail()}`).toBe(200);
      expect(JSON.parse(up.body)).toEqual({ length: SIZE, sha256: sizeHash() });
      const interval = 400;
      const stream = await events(at(base, `/sse?count=5&interval=${interval}`));
      expect(stream.status).toBe(200);
      expect(stream.events.map((event) => event.data)).toEqual(["1", "2", "3", "4", "5"]);
      // The origin writes one event every 400 ms: the first must reach the visitor well before
      // the last (a buffered stream would deliver all five together when it ends).
      const spread = stream.events.at(-1)!.at - stream.events[0]!.at;
      expect(spread, "ms between the first and the last event's arrival").toBeGreaterThan(interval * 2);
    }

    block("egress to port 443 only, no proxy", () => {
      const corpnet = corp({ egress: "direct443" });

      it("connects over WebSocket with the relay's CA from --ca, and serves downloads, uploads and events", async () => {
        const name = `direct-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", relay.caFile]);
        expect(transportOf(agent)).toBe("websocket");
        await serves(name, agent);
      }, 90_000);

      it("goes direct to a relay listed in NO_PROXY, whatever HTTPS_PROXY says", async () => {
        const name = `noproxy-${runtime}`;
        const nowhere = `http://${corpnet.network.hostIp}:3128`; // nothing listens, and the firewall refuses it
        const agent = await corpnet.start(name, ["--ca", relay.caFile], {
          HTTPS_PROXY: nowhere,
          NO_PROXY: `localhost,${relay.ip}`,
        });
        expect(transportOf(agent)).toBe("websocket");
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
      }, 30_000);

      it("says the proxy is unreachable, with a hint, and keeps retrying", async () => {
        const nowhere = `http://${corpnet.network.hostIp}:3128`;
        const agent = corpnet.spawn(`noproxy-at-${runtime}`, ["--ca", relay.caFile], { HTTPS_PROXY: nowhere });
        await agent.waitFor(/^error: cannot reach the proxy /, { timeoutMs: 20_000 });
        expect(agent.output).toContain(`${corpnet.network.hostIp}:3128 (from HTTPS_PROXY)`);
        expect(agent.output).toMatch(/^ {2}hint: check the proxy's host and port/m);
        expect(agent.exitCode).toBeNull(); // a proxy may come back: it retries
      }, 30_000);

      it("says the relay is unreachable, with a hint, and keeps retrying", async () => {
        const agent = new AgentProcess(
          agentRuntime,
          ["--port", String(corpnet.origin.port), "--relay", `https://${corpnet.network.hostIp}`, "--ca", relay.caFile],
          networkEnv(),
          { netns: corpnet.network.ns },
        );
        corpnet.agents.push(agent);
        await agent.waitFor(/^error: cannot reach the relay at /, { timeoutMs: 20_000 });
        expect(agent.output).toMatch(/connection refused/i);
        expect(agent.output).toMatch(/^ {2}hint: .*HTTPS_PROXY/m);
        expect(agent.exitCode).toBeNull();
      }, 30_000);
    });

    shared("squid with Basic auth, CONNECT to 443 only", () => {
      const corpnet = corp({ egress: "squid", squid: { auth: { user: "corp user", password: "p@ss:w/rd" } } });

      it("goes through HTTPS_PROXY with percent-encoded credentials, over WebSocket", async () => {
        expect(corpnet.network.proxyUrl).toContain("corp%20user:p%40ss%3Aw%2Frd@");
        const name = `squid-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", relay.caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(transportOf(agent)).toBe("websocket");
        await serves(name, agent);
        // squid logs a tunnel when it ends: stop the agent, and wait for squid to see it go.
        await agent.stop("SIGINT");
        const tunnel = new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT ${relay.ip.replaceAll(".", "\\.")}:443 corp user `);
        for (let i = 0; i < 40 && !tunnel.test(corpnet.network.squidLog().join("\n")); i++) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(corpnet.network.squidLog().join("\n")).toMatch(tunnel);
      }, 90_000);

      it("exits 5 on wrong proxy credentials, saying 407 and credentials, after at most 2 attempts", async () => {
        // A password no other output could contain (the tunnel's name holds "wrong").
        const wrong = corpnet.network.proxyUrl.replace("p%40ss%3Aw%2Frd", "xyzzy-not-it");
        const seen = corpnet.network.squidLog().length;
        const agent = corpnet.spawn(`squid-wrong-${runtime}`, ["--ca", relay.caFile], { HTTPS_PROXY: wrong });
        expect(await exitOf(agent, 10_000)).toBe(5);
        expect(agent.output).toMatch(/^error: .*refused the Basic credentials of user "corp user" \(407 .*after 1 attempt\b/m);
        expect(agent.output).toMatch(/^ {2}hint: check the user name and the password, from the proxy URL/m);
        expect(agent.output).not.toContain("xyzzy-not-it");
        expect(deniedSince(corpnet.network, seen)).toBeLessThanOrEqual(2);
      }, 40_000);

      it("passes every step of agent doctor", async () => {
        const { status, output } = await corpnet.doctor(["--ca", relay.caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(status, output).toBe(0);
        expect(output).toMatch(/^ok\s+proxy\b/m);
        expect(output).toMatch(/^ok\s+websocket\b/m);
        expect(output).not.toMatch(/^FAIL/m);
      }, 40_000);
    });

    proxyAuthBlocks({ runtime, relay: () => relay, corp, serves });

    block("squid whose policy refuses CONNECT to the relay", () => {
      // A function: the relay's address is known once it started.
      const corpnet = corp(() => ({ egress: "squid", squid: { deny: [relay.ip] } }));

      it("exits 5, saying the proxy refused the tunnel and who can allow it", async () => {
        const agent = corpnet.spawn(`squid-deny-${runtime}`, ["--ca", relay.caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(await exitOf(agent)).toBe(5);
        expect(agent.output).toMatch(
          new RegExp(`^error: .*refused to open a tunnel to ${relay.ip.replaceAll(".", "\\.")}:443 \\(403`, "m"),
        );
        expect(agent.output).toMatch(/^ {2}hint: .*administrators/m);
      }, 40_000);
    });

    block("squid cutting connections idle for 3 s", () => {
      const corpnet = corp({ egress: "squid", squid: { idleTimeoutSeconds: 3 } });

      it("keeps its one connection open with heartbeats", async () => {
        const name = `idle-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", relay.caFile, "--heartbeat", "1"], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        // Idle more than twice the proxy's limit, but for the heartbeats.
        await new Promise((resolve) => setTimeout(resolve, 7_000));
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
        expect(
          agent.lines.filter((line) => /^tunnel \S+ is up: /.test(line)),
          agent.output,
        ).toHaveLength(1);
        expect(agent.output).not.toMatch(/connection lost/);
      }, 40_000);
    });

    shared("mitmproxy inspecting TLS", () => {
      const corpnet = corp({ egress: "mitm" });

      it("works with the proxy's CA in --ca (a bundle with the relay's), over WebSocket", async () => {
        const bundle = join(corpnet.network.dir, "bundle.pem");
        writeFileSync(bundle, readFileSync(relay.caFile, "utf8") + readFileSync(corpnet.network.proxyCaFile, "utf8"));
        const name = `mitm-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", bundle], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(transportOf(agent)).toBe("websocket");
        await serves(name, agent);
      }, 120_000);

      it("works with the proxy's CA in NODE_EXTRA_CA_CERTS", async () => {
        const name = `mitm-env-${runtime}`;
        const agent = await corpnet.start(name, [], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
          NODE_EXTRA_CA_CERTS: corpnet.network.proxyCaFile,
        });
        expect(transportOf(agent)).toBe("websocket");
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
      }, 30_000);

      it("exits 5 without the proxy's CA, naming its issuer mitmproxy and hinting at --ca", async () => {
        const agent = corpnet.spawn(`mitm-noca-${runtime}`, ["--ca", relay.caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(await exitOf(agent)).toBe(5);
        expect(agent.output).toMatch(/^error: .*mitmproxy/m);
        expect(agent.output).toMatch(/^ {2}hint: .*--ca/m);
      }, 40_000);

      it("connects anyway with --insecure, and warns", async () => {
        const name = `mitm-insecure-${runtime}`;
        const agent = await corpnet.start(name, ["--insecure"], { HTTPS_PROXY: corpnet.network.proxyUrl });
        expect(agent.output).toMatch(/^warning: .*insecure/im);
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
      }, 30_000);
    });

    shared("mitmproxy refusing WebSocket upgrades", () => {
      const corpnet = corp({ egress: "mitm", mitm: { blockWebSockets: true } });

      it("falls back to the HTTPS transport by itself, and serves downloads, uploads and events", async () => {
        const name = `nows-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", corpnet.network.proxyCaFile], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        expect(transportOf(agent)).toBe("https");
        expect(agent.output).toMatch(/^transport: https \(.+\)$/m);
        await serves(name, agent);
      }, 180_000);

      it("has agent doctor fail the WebSocket step and pass the HTTPS one", async () => {
        const { status, output } = await corpnet.doctor(["--ca", corpnet.network.proxyCaFile], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        expect(status, output).toBe(0);
        expect(output).toMatch(/^FAIL\s+websocket\b/m);
        expect(output).toMatch(/^ok\s+https\b/m);
      }, 40_000);
    });

    block("mitmproxy stripping Upgrade headers", () => {
      const corpnet = corp({ egress: "mitm", mitm: { stripUpgrade: true } });

      it("falls back to the HTTPS transport, saying the upgrade was stripped", async () => {
        const name = `strip-${runtime}`;
        const agent = await corpnet.start(name, ["--ca", corpnet.network.proxyCaFile], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        expect(transportOf(agent)).toBe("https");
        expect(agent.output).toMatch(/^transport: https \(.*without its Upgrade header \(a proxy stripped it\)\)$/m);
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
      }, 40_000);
    });

    block("mitmproxy passing WebSocket upgrades but none of their messages", () => {
      const corpnet = corp({ egress: "mitm", mitm: { dropWebSockets: true } });

      it("falls back to the HTTPS transport after two silent WebSockets", async () => {
        const name = `drop-${runtime}`;
        // The default heartbeat (20 s): each silent WebSocket is given up when the relay has
        // not answered the hello within 8 s.
        const agent = await corpnet.start(name, ["--ca", corpnet.network.proxyCaFile], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        expect(transportOf(agent)).toBe("websocket");
        expect(agent.output).toMatch(
          /^transport: https \(the WebSocket connection died 2 times before the relay answered \(the relay did not answer within 8s\)\)$/m,
        );
        expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
      }, 60_000);

      it("has agent doctor say the upgrade passes but no message comes back", async () => {
        const { status, output } = await corpnet.doctor(["--ca", corpnet.network.proxyCaFile], {
          HTTPS_PROXY: corpnet.network.proxyUrl,
        });
        expect(status, output).toBe(0);
        expect(output).toMatch(/^FAIL\s+websocket\s+the upgrade was accepted but no message came back/m);
        expect(output).toMatch(/^ok\s+https\b/m);
      }, 40_000);
    });

    block(`squid cutting every connection after ${CUT_EVERY} s`, () => {
      const corpnet = corp({ egress: "squid", squid: { cut: { everySeconds: CUT_EVERY, how: "alternate" } } });

      it(
        "reconnects under the same name each time, and visitors keep being served",
        async () => {
          const name = `cut-${runtime}`;
          const agent = await corpnet.start(name, ["--ca", relay.caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
          const { cuts } = corpnet.network;
          const base = relay.visitorUrl(name);
          type Outcome = { i: number; start: number; end: number; status: number; error?: string };
          const pending: Promise<Outcome>[] = [];
          const deadline = Date.now() + (CUTS + 1) * CUT_EVERY * 1000 + 10_000;
          for (let i = 0; Date.now() < deadline; i++) {
            if (cuts.length >= CUTS && Date.now() - cuts[CUTS - 1]!.at > 2000) break;
            const start = Date.now();
            const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no answer in 20 s")), 20_000));
            pending.push(
              Promise.race([visit(at(base, `/echo?i=${i}`)), timeout]).then(
                (response) => ({
                  i,
                  start,
                  end: Date.now(),
                  status: response.status,
                  error: response.status === 200 ? undefined : response.body.toString().slice(0, 200),
                }),
                (error: Error) => ({ i, start, end: Date.now(), status: 0, error: error.message }),
              ),
            );
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
          const outcomes = await Promise.all(pending);
          const failed = outcomes.filter((outcome) => outcome.status !== 200);
          // Requests in flight at a cut go on once the agent resumes its session; those that
          // arrive while it reconnects wait for it: none fails.
          const atCut = (o: Outcome) => cuts.some((cut) => cut.at >= o.start - 250 && cut.at <= o.end + 250);
          console.log(
            `[corp ${runtime}] ${cuts.length} cuts (${cuts.map((cut) => cut.how).join(", ")}), ${outcomes.length} requests ` +
              `(${outcomes.filter(atCut).length} in flight at a cut), ${failed.length} failed` +
              (failed.length ? `: ${failed.map((o) => `#${o.i} ${o.status} ${o.error}`).join("; ")}` : ""),
          );
          expect(cuts.length).toBeGreaterThanOrEqual(CUTS);
          expect(failed, `failed requests:\nagent said:\n${agent.output}`).toEqual([]);
          const ups = agent.lines.map((line) => /^tunnel (\S+) is up: /.exec(line)?.[1]).filter(Boolean);
          expect(ups.length, agent.output).toBeGreaterThanOrEqual(CUTS);
          expect(new Set(ups)).toEqual(new Set([name]));
        },
        (CUTS + 1) * CUT_EVERY * 1000 + 60_000,
      );
    });
  });
}
