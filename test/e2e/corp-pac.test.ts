import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime, type RuntimeName } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { CorpNetwork, CorpOrigin, CorpRelay, networkEnv, skipCorp } from "../_corp.ts";
import { PacRig } from "../_pac.ts";
import { executableLauncher } from "../_package.ts";
import { download, upload } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";

// PAC files and WPAD in a corporate network (test/_corp.ts) whose firewall lets out only squid,
// the PAC server, and (for the PAC's DIRECT) the relay's address on 443: Node, Bun, Deno and the
// executable, each in turn, as corp.test.ts runs them.

const SIZE = 20 * 1024 * 1024;
const skip = skipCorp("the PAC and WPAD corporate-network tests");
let expectedHash: string | undefined;

/** Waits for `agent` to exit (it is expected to); fails if it keeps running. */
async function exitOf(agent: AgentProcess, timeoutMs = 30_000): Promise<number | null> {
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

function pacSuite(runtime: RuntimeName | "executable"): void {
  describe.skipIf(skip)(`a ${runtime} agent choosing its proxy with a PAC file`, () => {
    let relay: CorpRelay;
    let agentRuntime: AgentRuntime;
    let network: CorpNetwork;
    let origin: CorpOrigin;
    let rig: PacRig;
    /** A second network, whose squid wants Basic credentials. */
    let authNetwork: CorpNetwork;
    let authOrigin: CorpOrigin;
    let authRig: PacRig;
    const agents: AgentProcess[] = [];

    beforeAll(async () => {
      relay = await CorpRelay.start();
      agentRuntime = runtime === "executable" ? executableLauncher(inject("agentExecutable"), { keepPath: true }) : runtime;
      network = await CorpNetwork.create({ egress: "squid" });
      origin = await CorpOrigin.start(network);
      // WPAD by DNS and the search domain (wpad -> wpad.corp.test) here; by the hosts file in authNetwork.
      rig = await PacRig.start(network, {
        hosts: { "relay.burrow.test": relay.ip },
        direct: [relay.ip],
        dns: { search: "corp.test", names: { "wpad.corp.test": network.hostIp } },
      });
      authNetwork = await CorpNetwork.create({ egress: "squid", squid: { auth: { user: "corp user", password: "p@ss:w/rd" } } });
      authOrigin = await CorpOrigin.start(authNetwork);
      authRig = await PacRig.start(authNetwork, { hosts: { wpad: authNetwork.hostIp } });
    }, 90_000);

    afterAll(async () => {
      await Promise.all(agents.map((agent) => agent.stop("SIGINT")));
      await rig?.dispose();
      await network?.dispose();
      await authRig?.dispose();
      await authNetwork?.dispose();
      await relay?.dispose();
      if (agentRuntime && typeof agentRuntime !== "string") rmSync(agentRuntime.cwd, { recursive: true, force: true });
    });

    /** The PAC: the relay's address through squid, names under burrow.test (that resolve) directly. */
    const pac = () => `function FindProxyForURL(url, host) {
      if (shExpMatch(host, "*.burrow.test") && isResolvable(host)) return "DIRECT";
      // myIpAddress(): the namespace's own address, from its interfaces (Deno: --allow-sys=networkInterfaces).
      if (isInNet(host, "${relay.ip}", "255.255.255.255") && isInNet(myIpAddress(), "${network.nsIp}", "255.255.255.0"))
        return "PROXY ${network.hostIp}:3128";
      return "DIRECT";
    }`;

    function spawn(name: string, args: string[], relayUrl = relay.url): AgentProcess {
      const argv = ["--port", String(origin.port), "--relay", relayUrl, "--name", name, "--ca", relay.caFile, ...args];
      const agent = new AgentProcess(agentRuntime, argv, networkEnv(), { netns: network.ns });
      agents.push(agent);
      return agent;
    }

    /** A 20 MB download and a 20 MB upload through the tunnel, both checked by sha256. */
    async function moves20MB(name: string, agent: AgentProcess): Promise<void> {
      expectedHash ??= patternHash(SIZE);
      const base = relay.visitorUrl(name);
      const down = await download(at(base, `/pattern/${SIZE}`));
      expect(down, agent.output).toMatchObject({ status: 200, length: SIZE, sha256: expectedHash });
      const up = await upload(at(base, "/sink"), SIZE);
      expect(up.status, agent.output).toBe(200);
      expect(JSON.parse(up.body)).toEqual({ length: SIZE, sha256: expectedHash });
    }

    /** squid logs a tunnel when it ends: waits for a CONNECT to `authority` to appear. */
    async function squidSaw(authority: string): Promise<boolean> {
      const pattern = `CONNECT ${authority} `;
      for (let i = 0; i < 60 && !network.squidLog().some((line) => line.includes(pattern)); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return network.squidLog().some((line) => line.includes(pattern));
    }

    it("goes through the proxy the PAC file (over HTTP) names for the relay, 20 MB each way, and directly where it says DIRECT", async () => {
      const url = rig.serve("/proxy.pac", pac());
      const name = `pac-${runtime}`;
      const agent = spawn(name, ["--proxy-pac", url]);
      await agent.ready();
      expect(agent.output).toContain(
        `the PAC file (${url}, from --proxy-pac) says "PROXY ${network.hostIp}:3128" for ${relay.ip}`,
      );
      await moves20MB(name, agent);
      await agent.stop("SIGINT");
      expect(await squidSaw(`${relay.ip}:443`), network.squidLog().join("\n")).toBe(true);

      // The same relay by name: the PAC resolves it (the namespace's hosts file) and says DIRECT.
      const direct = spawn(`pac-direct-${runtime}`, ["--proxy-pac", url], "https://relay.burrow.test");
      await direct.ready();
      expect(direct.output).toContain('says "DIRECT" for relay.burrow.test');
      expect((await visit(at(relay.visitorUrl(`pac-direct-${runtime}`), "/status/201"))).status).toBe(201);
      await direct.stop("SIGINT");
      expect(network.squidLog().join("\n")).not.toContain("relay.burrow.test");
    }, 120_000);

    it("finds the PAC file by WPAD (http://wpad/wpad.dat, wpad.corp.test by the search domain), and goes through its second proxy when the first is down, 20 MB each way", async () => {
      // Nothing listens on 3129, and the firewall refuses it: the first proxy is down.
      rig.serve(
        "/wpad.dat",
        `function FindProxyForURL(url, host) { return "PROXY ${network.hostIp}:3129; PROXY ${network.hostIp}:3128"; }`,
      );
      const name = `wpad-${runtime}`;
      const agent = spawn(name, ["--proxy", "auto"]);
      await agent.ready();
      expect(agent.output).toContain("WPAD: found a PAC file at http://wpad/wpad.dat");
      expect(agent.output).toMatch(
        new RegExp(
          `^warning: cannot reach the proxy http://${network.hostIp.replaceAll(".", "\\.")}:3129 \\(from the PAC file WPAD found\\): connection refused.*; trying ${network.hostIp.replaceAll(".", "\\.")}:3128$`,
          "m",
        ),
      );
      await moves20MB(name, agent);
      await agent.stop("SIGINT");
      expect(await squidSaw(`${relay.ip}:443`)).toBe(true);
      expect(rig.fetched).toContain("/wpad.dat");
    }, 120_000);

    it("has agent doctor show the PAC file's answer and the rule that decided it", async () => {
      const url = rig.serve("/proxy.pac", pac());
      const doctor = new AgentProcess(
        agentRuntime,
        ["doctor", "--relay", relay.url, "--ca", relay.caFile, "--proxy-pac", url],
        networkEnv(),
        {
          netns: network.ns,
        },
      );
      agents.push(doctor);
      expect(await exitOf(doctor), doctor.output).toBe(0);
      expect(doctor.output).toMatch(
        new RegExp(`^ok\\s+pac\\s+${url.replaceAll(".", "\\.")} \\(from --proxy-pac\\) answers "PROXY `, "m"),
      );
      expect(doctor.output).toContain(
        `because shExpMatch("${relay.ip}", "*.burrow.test") = false, isInNet("${relay.ip}", "${relay.ip}", "255.255.255.255") = true, myIpAddress() = "${network.nsIp}", isInNet("${network.nsIp}", "${network.nsIp}", "255.255.255.0") = true`,
      );
      expect(doctor.output).toMatch(
        new RegExp(`^ok\\s+proxy\\s+http://${network.hostIp.replaceAll(".", "\\.")}:3128 \\(from the PAC file\\)`, "m"),
      );
    }, 60_000);

    it("has agent doctor say what WPAD found", async () => {
      rig.serve("/wpad.dat", `function FindProxyForURL(url, host) { return "PROXY ${network.hostIp}:3128"; }`);
      const doctor = new AgentProcess(
        agentRuntime,
        ["doctor", "--relay", relay.url, "--ca", relay.caFile, "--proxy", "auto"],
        networkEnv(),
        {
          netns: network.ns,
        },
      );
      agents.push(doctor);
      expect(await exitOf(doctor), doctor.output).toBe(0);
      expect(doctor.output).toMatch(
        new RegExp(
          `^ok\\s+pac\\s+WPAD found http://wpad/wpad\\.dat answers "PROXY ${network.hostIp.replaceAll(".", "\\.")}:3128"$`,
          "m",
        ),
      );
      expect(doctor.output).toMatch(/^ok\s+proxy\s+http:\/\/\S+ \(from the PAC file WPAD found\)/m);
    }, 60_000);

    it("gives the proxy a PAC names the credentials of BURROW_PROXY_USER and BURROW_PROXY_PASSWORD, and a proxy WPAD found only when named", async () => {
      const pacText = `function FindProxyForURL(url, host) { return "PROXY ${authNetwork.hostIp}:3128"; }`;
      const url = authRig.serve("/proxy.pac", pacText);
      authRig.serve("/wpad.dat", pacText);
      const credentials = { BURROW_PROXY_USER: "corp user", BURROW_PROXY_PASSWORD: "p@ss:w/rd" };
      const start = (name: string, args: string[]) => {
        const argv = ["--port", String(authOrigin.port), "--relay", relay.url, "--name", name, "--ca", relay.caFile, ...args];
        const agent = new AgentProcess(agentRuntime, argv, networkEnv(credentials), { netns: authNetwork.ns });
        agents.push(agent);
        return agent;
      };
      const named = start(`pac-auth-${runtime}`, ["--proxy-pac", url]);
      await named.ready();
      expect((await visit(at(relay.visitorUrl(`pac-auth-${runtime}`), "/status/201"))).status).toBe(201);
      await named.stop("SIGINT");

      const unnamed = start(`wpad-noauth-${runtime}`, ["--proxy", "auto"]);
      expect(await exitOf(unnamed)).toBe(5);
      expect(unnamed.output).toMatch(/^error: .*407/m);
      expect(unnamed.output).toContain(
        `hint: credentials go to a proxy that WPAD found only when you name its host: --proxy-credentials-for ${authNetwork.hostIp}`,
      );

      const trusted = start(`wpad-auth-${runtime}`, ["--proxy", "auto", "--proxy-credentials-for", authNetwork.hostIp]);
      await trusted.ready();
      expect((await visit(at(relay.visitorUrl(`wpad-auth-${runtime}`), "/status/201"))).status).toBe(201);
    }, 90_000);

    it("exits 5 for a PAC file that throws, naming the error and where", async () => {
      const url = rig.serve("/broken.pac", "function FindProxyForURL(url, host) {\n  return corporate.proxy;\n}");
      const agent = spawn(`pac-broken-${runtime}`, ["--proxy-pac", url]);
      expect(await exitOf(agent)).toBe(5);
      expect(agent.output).toMatch(/^error: the PAC file failed: ReferenceError: 'corporate' is not defined \(proxy\.pac:2\)/m);
      expect(agent.output).toMatch(/^ {2}hint: fix the PAC file/m);
    }, 40_000);
  });
}

pacSuite("node");
pacSuite("bun");
pacSuite("deno");
pacSuite("executable");
