import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime, type Launcher } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { CorpNetwork, CorpOrigin, CorpRelay, networkEnv, skipCorp } from "../_corp.ts";
import { skipKerberos } from "../_kerberos.ts";
import { ntlmVerdicts, skipNtlmVerifier } from "../_ntlm-verifier.ts";
import { PacRig } from "../_pac.ts";
import { executableLauncher } from "../_package.ts";
import { ROOT } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";

// A Windows-domain network, all of issue 20 at once: the only way out is squid, which offers
// `Proxy-Authenticate: Negotiate` (negotiate_wrapper_auth: Kerberos tickets of the network's
// realm, test/_kerberos.ts, or an NTLMSSP token inside it) and `Proxy-Authenticate: NTLM`, NTLM
// either way checked for real (NTLMv2 only) by gss-ntlmssp (test/_ntlm-verifier.ts),
// and the agent learns of squid only from a PAC file (served over HTTP in the network, and found
// by WPAD). The agents get nothing but their own flags and variables: --proxy-pac or --proxy auto,
// a Kerberos ticket (kinit) or BURROW_PROXY_USER/PASSWORD; no HTTPS_PROXY, no cntlm.
// One relay and one network for the whole file.

const SIZE = 20 * 1024 * 1024;
const skip =
  skipCorp("the Windows-domain corporate-network tests") ||
  skipKerberos("the Windows-domain corporate-network tests") ||
  skipNtlmVerifier("the Windows-domain corporate-network tests");

/** `deno task agent-negotiate`: the agent task's permissions and --allow-ffi (README). */
const denoNegotiate: Launcher = {
  name: "deno",
  cwd: ROOT,
  command: (args) => [join(ROOT, "node_modules/.bin/deno"), ["task", "--quiet", "agent-negotiate", ...args]],
};

/** The domain account the NTLM side knows; the agent is given it as DOMAIN\user. */
const ACCOUNT = { domain: "CORP", user: "bob", password: "W1nter 2026!" };
const NTLM_CREDENTIALS = { BURROW_PROXY_USER: `${ACCOUNT.domain}\\${ACCOUNT.user}`, BURROW_PROXY_PASSWORD: ACCOUNT.password };

describe.skipIf(skip)("agents in a Windows-domain network (Negotiate + NTLM proxy, found by a PAC file)", () => {
  let relay: CorpRelay;
  let network: CorpNetwork;
  let origin: CorpOrigin;
  let rig: PacRig;
  let pacUrl: string;
  let expectedHash: string;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    relay = await CorpRelay.start();
    network = await CorpNetwork.create({
      egress: "squid",
      kerberos: true,
      squid: { negotiate: "kerberos-or-ntlm", ntlm: ACCOUNT },
    });
    origin = await CorpOrigin.start(network);
    const realm = network.realm!;
    // The rig's hosts file replaces the realm's: it names the proxy and the KDC again, and wpad.
    rig = await PacRig.start(network, {
      hosts: { [realm.proxyHost]: network.hostIp, [`kdc.${realm.domain}`]: network.hostIp, wpad: network.hostIp },
    });
    // The proxy by its host name: Kerberos asks for a ticket to HTTP@<that name>.
    const pac = `function FindProxyForURL(url, host) {
      if (isInNet(host, "${relay.ip}", "255.255.255.255")) return "PROXY ${realm.proxyHost}:3128";
      return "DIRECT";
    }`;
    pacUrl = rig.serve("/proxy.pac", pac);
    rig.serve("/wpad.dat", pac);
    realm.kinit();
    expectedHash = patternHash(SIZE);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop("SIGINT")));
    await rig?.dispose();
    await network?.dispose();
    await relay?.dispose();
  });

  /** Waits for `agent` to exit (it is expected to); fails if it keeps running. */
  async function exitOf(agent: AgentProcess, timeoutMs = 30_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs}ms:\n${agent.output}`)), timeoutMs);
    });
    try {
      return await Promise.race([agent.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  function start(runtime: AgentRuntime, args: string[], env: Record<string, string>): AgentProcess {
    const agent = new AgentProcess(runtime, args, networkEnv(env), { netns: network.ns });
    agents.push(agent);
    return agent;
  }

  function tunnel(runtime: AgentRuntime, name: string, env: Record<string, string>, more: string[] = []): AgentProcess {
    const args = ["--port", String(origin.port), "--relay", relay.url, "--name", name, "--ca", relay.caFile];
    return start(runtime, [...args, "--proxy-pac", pacUrl, ...more], env);
  }

  /** A 20 MB download and a 20 MB upload through tunnel `name`, both checked by sha256. */
  async function moves20MB(name: string, agent: AgentProcess): Promise<void> {
    const base = relay.visitorUrl(name);
    const tail = () => `\nagent said:\n${agent.lines.slice(-15).join("\n")}`;
    const down = await download(at(base, `/pattern/${SIZE}`));
    expect(down, `download${tail()}`).toMatchObject({ status: 200, length: SIZE, sha256: expectedHash });
    const up = await upload(at(base, "/sink"), SIZE);
    expect(up.status, `upload: ${up.body.slice(0, 300)}${tail()}`).toBe(200);
    expect(JSON.parse(up.body)).toEqual({ length: SIZE, sha256: expectedHash });
  }

  /** Stops `agent` and waits for squid to log its tunnel (squid logs one when it ends): its authenticated user. */
  async function tunnelUser(agent: AgentProcess, seen: number): Promise<string | undefined> {
    await agent.stop("SIGINT");
    const pattern = new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT ${relay.ip.replaceAll(".", "\\.")}:443 (\\S+) `);
    const found = () =>
      network
        .squidLog()
        .slice(seen)
        .find((line) => pattern.test(line));
    for (let i = 0; i < 60 && !found(); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    return pattern.exec(found() ?? "")?.[1];
  }

  it("has squid offer Negotiate and NTLM, and nothing reach the relay without it (the rig)", async () => {
    const refused = await network.run(["curl", "-sS", "--max-time", "5", "--cacert", relay.caFile, `${relay.url}/`]);
    expect(refused.status, "directly").not.toBe(0);
    const answer = await network.run([
      ...["curl", "-sS", "-i", "--max-time", "10", "--proxy", `http://${network.realm!.proxyHost}:3128`],
      ...["-p", `${relay.url}/`],
    ]);
    expect(answer.output).toMatch(/HTTP\/1\.1 407/);
    expect(answer.output).toMatch(/^Proxy-Authenticate: Negotiate\r?$/m);
    expect(answer.output).toMatch(/^Proxy-Authenticate: NTLM\r?$/m);
    // An NTLM Negotiate message (MS-NLMP 2.2.1.1) inside Negotiate, as Windows sends one without
    // a ticket: gss-ntlmssp's challenge comes back inside Negotiate.
    const type1 = "TlRMTVNTUAABAAAABoIIAAAAAAAAAAAAAAAAAAAAAAA=";
    const inside = await network.run([
      ...["curl", "-sS", "-i", "--max-time", "10", "--proxy", `http://${network.realm!.proxyHost}:3128`],
      ...["--proxy-header", `Proxy-Authorization: Negotiate ${type1}`, "-p", `${relay.url}/`],
    ]);
    expect(inside.output).toMatch(/^Proxy-Authenticate: Negotiate TlRMTVNTUAACAAAA/m);
  }, 30_000);

  const kerberos = [
    ["bun", () => "bun" as const],
    ["deno", () => denoNegotiate],
    ["executable", () => executableLauncher(inject("agentExecutable"), { keepPath: true })],
  ] as const;
  for (const [runtimeName, runtime] of kerberos) {
    it(`has a ${runtimeName} agent with a Kerberos ticket and no credentials go through Negotiate as the ticket's principal, 20 MB each way`, async () => {
      const realm = network.realm!;
      const name = `win-krb-${runtimeName}`;
      const seen = network.squidLog().length;
      const verdicts = ntlmVerdicts(network.dir).length;
      const agent = tunnel(runtime(), name, realm.clientEnv());
      await agent.ready();
      expect(agent.output).toContain(
        `the PAC file (${pacUrl}, from --proxy-pac) says "PROXY ${realm.proxyHost}:3128" for ${relay.ip}`,
      );
      await moves20MB(name, agent);
      expect(await tunnelUser(agent, seen), network.squidLog().slice(seen).join("\n")).toBe(realm.principal);
      // Negotiate was chosen over NTLM: the NTLM checker saw no handshake.
      expect(ntlmVerdicts(network.dir).slice(verdicts)).toEqual([]);
    }, 180_000);
  }

  it("has a node agent (no GSSAPI) with BURROW_PROXY_USER/PASSWORD go through NTLM, checked by gss-ntlmssp, 20 MB each way", async () => {
    const realm = network.realm!;
    const name = "win-ntlm-node";
    const seen = network.squidLog().length;
    const verdicts = ntlmVerdicts(network.dir).length;
    // A cache without a ticket, as on a machine outside the domain.
    const agent = tunnel("node", name, { ...realm.clientEnv(realm.cache("none")), ...NTLM_CREDENTIALS });
    await agent.ready();
    await moves20MB(name, agent);
    expect(agent.output).not.toContain(ACCOUNT.password);
    // squid's log escapes the backslash of DOMAIN\user.
    expect(await tunnelUser(agent, seen)).toBe(`${ACCOUNT.domain}\\\\${ACCOUNT.user}`);
    expect(ntlmVerdicts(network.dir).slice(verdicts)).toEqual([`accepted NTLMv2 response from CORP\\${ACCOUNT.user}`]);
  }, 180_000);

  it("has a bun agent told --proxy-auth negotiate, without a ticket, send its credentials as NTLM inside Negotiate, checked by gss-ntlmssp", async () => {
    const realm = network.realm!;
    const name = "win-spnego-bun";
    const seen = network.squidLog().length;
    const verdicts = ntlmVerdicts(network.dir).length;
    const env = { ...realm.clientEnv(realm.cache("none")), ...NTLM_CREDENTIALS };
    const agent = tunnel("bun", name, env, ["--proxy-auth", "negotiate"]);
    await agent.ready();
    expect((await visit(at(relay.visitorUrl(name), "/status/201"))).status).toBe(201);
    expect(await tunnelUser(agent, seen)).toBe(`${ACCOUNT.domain}\\\\${ACCOUNT.user}`);
    // Through negotiate_wrapper_auth to the verifier, not through squid's NTLM scheme.
    expect(ntlmVerdicts(network.dir).slice(verdicts)).toEqual([`accepted NTLMv2 response from CORP\\${ACCOUNT.user}`]);
  }, 60_000);

  it("has a bun agent told --proxy-auth negotiate, with a wrong password, exit 5 after one NTLM-inside-Negotiate refusal", async () => {
    const realm = network.realm!;
    const verdicts = ntlmVerdicts(network.dir).length;
    const env = { ...realm.clientEnv(realm.cache("none")), ...NTLM_CREDENTIALS, BURROW_PROXY_PASSWORD: "wrong" };
    const agent = tunnel("bun", "win-spnego-wrong", env, ["--proxy-auth", "negotiate"]);
    expect(await exitOf(agent)).toBe(5);
    expect(agent.output).toMatch(/^error: .*Negotiate.*407/m);
    expect(ntlmVerdicts(network.dir).slice(verdicts)).toEqual([
      expect.stringMatching(/^refused NTLMv2 response from CORP\\bob: /),
    ]);
    // squid is still up for the next agent.
    const answer = await network.run([
      "curl",
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--proxy",
      `http://${realm.proxyHost}:3128`,
      "-p",
      `${relay.url}/`,
    ]);
    expect(answer.output).toContain("407");
  }, 60_000);

  it("has agent doctor (bun, --proxy auto) show what WPAD found, the PAC's answer and Negotiate chosen", async () => {
    const realm = network.realm!;
    const doctor = start("bun", ["doctor", "--relay", relay.url, "--ca", relay.caFile, "--proxy", "auto"], realm.clientEnv());
    expect(await exitOf(doctor), doctor.output).toBe(0);
    expect(doctor.output).toMatch(
      new RegExp(
        `^ok\\s+pac\\s+WPAD found http://wpad/wpad\\.dat answers "PROXY ${realm.proxyHost.replaceAll(".", "\\.")}:3128"`,
        "m",
      ),
    );
    expect(doctor.output).toMatch(/^ok\s+proxy\s+http:\/\/proxy\.burrow\.test:3128 \(from the PAC file WPAD found\)/m);
    expect(doctor.output).toMatch(
      new RegExp(`^ok\\s+connect\\s.*\\(Negotiate as "${realm.principal}": 1 attempt, 1 connection\\)`, "m"),
    );
    expect(rig.fetched).toContain("/wpad.dat");
  }, 60_000);

  it("has agent doctor (node, --proxy-pac) show the PAC's answer and NTLM chosen", async () => {
    const realm = network.realm!;
    const doctor = start("node", ["doctor", "--relay", relay.url, "--ca", relay.caFile, "--proxy-pac", pacUrl], {
      ...realm.clientEnv(realm.cache("none")),
      ...NTLM_CREDENTIALS,
    });
    expect(await exitOf(doctor), doctor.output).toBe(0);
    expect(doctor.output).toMatch(
      new RegExp(`^ok\\s+pac\\s+${pacUrl.replaceAll(".", "\\.")} \\(from --proxy-pac\\) answers "PROXY `, "m"),
    );
    expect(doctor.output).toMatch(/^ok\s+connect\s.*\(NTLM as "CORP\\bob": 1 attempt, 1 connection\)/m);
  }, 60_000);
});
