// The proxy authentication scenarios of the corporate-network suite (./_corp.ts), on each
// runtime: squid with Digest, with NTLM (ntlm_fake_auth: the handshake only) and with real
// NTLMv2 checking (gss-ntlmssp), each moving 20 MB each way; wrong passwords exit 5 within
// 10 s after at most 2 attempts; NTLM survives squid's restart through a fresh handshake.
import { describe, expect, it } from "vitest";
import type { AgentProcess, RuntimeName } from "../_agent.ts";
import { type CorpNetwork, type CorpOptions, type CorpOrigin, type CorpRelay, corpAvailable } from "../_corp.ts";
import { ntlmVerdicts, skipNtlmVerifier } from "../_ntlm-verifier.ts";
import { download } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";
import { exitOf, SIZE, sizeHash, transportOf } from "./_corp.ts";

const skipNtlm = corpAvailable().ok && skipNtlmVerifier("the corporate-network tests against real NTLMv2 checking");

/** What a corp suite gives its blocks: a network per block, and the visitor's check. */
export interface CorpSuite {
  runtime: RuntimeName | "executable";
  relay(): CorpRelay;
  corp(options: CorpOptions | (() => CorpOptions)): {
    network: CorpNetwork;
    origin: CorpOrigin;
    spawn(name: string, args: string[], env?: Record<string, string>): AgentProcess;
    start(name: string, args: string[], env?: Record<string, string>): Promise<AgentProcess>;
    doctor(args: string[], env?: Record<string, string>): Promise<{ status: number | null; output: string }>;
  };
  serves(name: string, agent: AgentProcess): Promise<void>;
}

/** The proxy's 407 answers in squid's log after its first `seen` lines. */
export function deniedSince(network: CorpNetwork, seen: number): number {
  return network
    .squidLog()
    .slice(seen)
    .filter((line) => line.includes("TCP_DENIED/407")).length;
}

/** The blocks, inside a corp suite's describe; all of them run on the executable too. */
export function proxyAuthBlocks({ runtime, relay, corp, serves }: CorpSuite): void {
  describe("squid with Digest auth", () => {
    const corpnet = corp({
      egress: "squid",
      squid: { auth: { scheme: "digest", user: "alice", password: 's3cr3t, "quoted"' } },
    });
    const credentials = { BURROW_PROXY_USER: "alice", BURROW_PROXY_PASSWORD: 's3cr3t, "quoted"' };

    it("answers the challenge with credentials from BURROW_PROXY_USER and BURROW_PROXY_PASSWORD", async () => {
      const name = `digest-${runtime}`;
      const proxy = `http://${corpnet.network.hostIp}:${corpnet.network.proxyPort}`;
      const agent = await corpnet.start(name, ["--ca", relay().caFile], { HTTPS_PROXY: proxy, ...credentials });
      expect(transportOf(agent)).toBe("websocket");
      await serves(name, agent);
      expect(agent.output).not.toContain("s3cr3t");
    }, 120_000);

    it("exits 5 on a wrong password within 10 s, naming Digest, after at most 2 attempts", async () => {
      const proxy = `http://${corpnet.network.hostIp}:${corpnet.network.proxyPort}`;
      const seen = corpnet.network.squidLog().length;
      const agent = corpnet.spawn(`digest-wrong-${runtime}`, ["--ca", relay().caFile, "--debug"], {
        HTTPS_PROXY: proxy,
        ...credentials,
        BURROW_PROXY_PASSWORD: "wrong-password",
      });
      expect(await exitOf(agent, 10_000)).toBe(5);
      expect(agent.output).toMatch(/^error: .*refused the Digest credentials of user "alice" \(407 .*after 1 attempt\b/m);
      expect(agent.output).toMatch(/^ {2}hint: check the user name and the password, from BURROW_PROXY_USER/m);
      expect(agent.output).not.toContain("wrong-password");
      expect(deniedSince(corpnet.network, seen)).toBeLessThanOrEqual(2);
    }, 40_000);

    it("has agent doctor show the scheme and the attempts", async () => {
      const proxy = `http://${corpnet.network.hostIp}:${corpnet.network.proxyPort}`;
      const { status, output } = await corpnet.doctor(["--ca", relay().caFile], { HTTPS_PROXY: proxy, ...credentials });
      expect(status, output).toBe(0);
      expect(output).toMatch(/^ok\s+connect\s+CONNECT \S+:443: 200 .*\(Digest as "alice": 1 attempt, 1 connection\)$/m);
    }, 40_000);
  });

  describe("squid with NTLM auth (ntlm_fake_auth: the handshake, any password)", () => {
    const corpnet = corp({ egress: "squid", squid: { auth: { scheme: "ntlm", user: "CORP\\alice", password: "any" } } });

    it("goes through NTLM with DOMAIN%5Cuser from the proxy URL, over WebSocket", async () => {
      expect(corpnet.network.proxyUrl).toContain("CORP%5Calice:any@");
      const name = `ntlm-${runtime}`;
      const agent = await corpnet.start(name, ["--ca", relay().caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
      expect(transportOf(agent)).toBe("websocket");
      await serves(name, agent);
    }, 120_000);

    it("has agent doctor show NTLM", async () => {
      const { status, output } = await corpnet.doctor(["--ca", relay().caFile], { HTTPS_PROXY: corpnet.network.proxyUrl });
      expect(status, output).toBe(0);
      expect(output).toMatch(/^ok\s+connect\s+CONNECT \S+:443: 200 .*\(NTLM as "CORP\\alice": 1 attempt, 1 connection\)$/m);
    }, 40_000);
  });

  describe.skipIf(skipNtlm)("squid checking NTLMv2 passwords (gss-ntlmssp)", () => {
    const account = { domain: "CORP", user: "alice", password: "s3cret pass" };
    // Offering NTLM, then Basic (for --proxy-auth basic), as many corporate proxies do.
    const corpnet = corp({
      egress: "squid",
      squid: { ntlm: account, auth: { user: "bob", password: "basic pass" } },
    });
    const proxy = () => `http://${corpnet.network.hostIp}:${corpnet.network.proxyPort}`;
    const credentials = { BURROW_PROXY_USER: "CORP\\alice", BURROW_PROXY_PASSWORD: account.password };

    it("chooses NTLM over Basic, and gss-ntlmssp accepts its NTLMv2 response to the right password", async () => {
      const name = `ntlmv2-${runtime}`;
      const seen = ntlmVerdicts(corpnet.network.dir).length;
      const agent = await corpnet.start(name, ["--ca", relay().caFile], { HTTPS_PROXY: proxy(), ...credentials });
      expect(transportOf(agent)).toBe("websocket");
      await serves(name, agent);
      expect(ntlmVerdicts(corpnet.network.dir).slice(seen)).toEqual(["accepted NTLMv2 response from CORP\\alice"]);
    }, 120_000);

    it("uses Basic instead when --proxy-auth basic pins it, as agent doctor shows", async () => {
      const seen = ntlmVerdicts(corpnet.network.dir).length;
      const { status, output } = await corpnet.doctor(["--ca", relay().caFile, "--proxy-auth", "basic"], {
        HTTPS_PROXY: proxy(),
        BURROW_PROXY_USER: "bob",
        BURROW_PROXY_PASSWORD: "basic pass",
      });
      expect(status, output).toBe(0);
      expect(output).toMatch(/^ok\s+connect\s+CONNECT \S+:443: 200 .*\(Basic as "bob": 1 attempt, 1 connection\)$/m);
      expect(ntlmVerdicts(corpnet.network.dir).slice(seen)).toEqual([]);
    }, 40_000);

    it("exits 5 on a wrong password within 10 s, naming NTLM, after 1 attempt", async () => {
      const seen = ntlmVerdicts(corpnet.network.dir).length;
      const agent = corpnet.spawn(`ntlmv2-wrong-${runtime}`, ["--ca", relay().caFile], {
        HTTPS_PROXY: proxy(),
        ...credentials,
        BURROW_PROXY_PASSWORD: "wrong pass",
      });
      expect(await exitOf(agent, 10_000)).toBe(5);
      expect(agent.output).toMatch(/^error: .*refused the NTLM credentials of user "CORP\\alice" \(407 .*after 1 attempt\b/m);
      expect(agent.output).toMatch(/^ {2}hint: check the user, its domain \(DOMAIN\\user or user@DOMAIN\) and the password/m);
      expect(agent.output).not.toContain("wrong pass");
      // The attempts gss-ntlmssp judged: each one a try against the account.
      const verdicts = ntlmVerdicts(corpnet.network.dir).slice(seen);
      expect(verdicts).toEqual([expect.stringMatching(/^refused NTLMv2 response from CORP\\alice: /)]);
    }, 40_000);

    it("authenticates each connection of the HTTPS transport with its own handshake", async () => {
      const name = `ntlmv2-https-${runtime}`;
      const seen = ntlmVerdicts(corpnet.network.dir).length;
      const agent = await corpnet.start(name, ["--ca", relay().caFile, "--transport", "https"], {
        HTTPS_PROXY: proxy(),
        ...credentials,
      });
      expect(transportOf(agent)).toBe("https");
      expect((await visit(at(relay().visitorUrl(name), "/status/201"))).status).toBe(201);
      // A poll and a send at least, each on its own connection through the proxy.
      const verdicts = ntlmVerdicts(corpnet.network.dir).slice(seen);
      expect(verdicts.length).toBeGreaterThanOrEqual(2);
      expect(new Set(verdicts)).toEqual(new Set(["accepted NTLMv2 response from CORP\\alice"]));
    }, 60_000);

    it("comes back through a fresh handshake when squid restarts mid-download, and the download goes on", async () => {
      const name = `ntlmv2-restart-${runtime}`;
      const agent = await corpnet.start(name, ["--ca", relay().caFile], { HTTPS_PROXY: proxy(), ...credentials });
      // A visitor reading at 8 MB/s: the download is in flight when squid goes.
      let finished = false;
      const transfer = download(at(relay().visitorUrl(name), `/pattern/${SIZE}`), 8e6).finally(() => {
        finished = true;
      });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(finished, "the download, when squid restarts").toBe(false);
      const seen = ntlmVerdicts(corpnet.network.dir).length;
      await corpnet.network.restartSquid();
      expect(await transfer).toMatchObject({ status: 200, length: SIZE, sha256: sizeHash() });
      await agent.waitFor(/^tunnel \S+ is up: .*; its streams go on/, { timeoutMs: 20_000 });
      // The new connection's handshake, checked by the restarted squid's verifier.
      expect(ntlmVerdicts(corpnet.network.dir).slice(seen)).toContain("accepted NTLMv2 response from CORP\\alice");
    }, 120_000);
  });
}
