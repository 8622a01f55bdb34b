import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentProcess, type AgentRuntime, type Launcher, type RuntimeName } from "../_agent.ts";
import { patternHash } from "../_bytes.ts";
import { CorpNetwork, type CorpOptions, CorpOrigin, CorpRelay, networkEnv, skipCorp } from "../_corp.ts";
import { skipKerberos } from "../_kerberos.ts";
import { executableLauncher } from "../_package.ts";
import { ROOT } from "../_relay.ts";
import { download, upload } from "../_transfer.ts";
import { at, visit } from "../_visit.ts";

// Negotiate (Kerberos) proxies: squid checking tickets of a realm of the network's own
// (test/_kerberos.ts: a KDC, the user alice, the proxy's keytab for HTTP/proxy.burrow.test), and
// squid taking Kerberos or NTLM inside Negotiate (negotiate_wrapper_auth with ntlm_fake_auth).
// curl checks each rig first; then each agent runtime goes through it and moves 20 MB each way.
// Node has no FFI for GSSAPI: it does NTLM inside Negotiate when given credentials, and says to
// use the Bun agent or the executable otherwise.

const MB = 1024 * 1024;
const SIZE = 20 * MB;
const skip =
  skipCorp("the Negotiate (Kerberos) corporate-network tests") ||
  skipKerberos("the Negotiate (Kerberos) corporate-network tests");

/** `deno task agent-negotiate`: the agent task's permissions and --allow-ffi (README). */
const denoNegotiate: Launcher = {
  name: "deno",
  cwd: ROOT,
  command: (args) => [join(ROOT, "node_modules/.bin/deno"), ["task", "--quiet", "agent-negotiate", ...args]],
};

/** NTLM credentials, DOMAIN\user as Windows users give them (ntlm_fake_auth takes any password). */
const NTLM_USER = "CORP\\bob";
const NTLM_URL_USER = "CORP%5Cbob";

let relay: CorpRelay;
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

/** A network (proxy, realm, origin), and agents started in it, torn down after the block. */
function corp(options: CorpOptions) {
  const context = {
    network: undefined as unknown as CorpNetwork,
    origin: undefined as unknown as CorpOrigin,
    agents: [] as AgentProcess[],
    spawn(runtime: AgentRuntime, name: string, env: Record<string, string>): AgentProcess {
      const argv = ["--port", String(context.origin.port), "--relay", relay.url, "--name", name, "--ca", relay.caFile];
      const agent = new AgentProcess(runtime, argv, networkEnv(env), { netns: context.network.ns });
      context.agents.push(agent);
      return agent;
    },
  };
  beforeAll(async () => {
    context.network = await CorpNetwork.create(options);
    context.origin = await CorpOrigin.start(context.network);
  }, 60_000);
  afterAll(async () => {
    await Promise.all(context.agents.map((agent) => agent.stop("SIGINT")));
    await context.network?.dispose();
  });
  return context;
}

/** A 20 MB download and a 20 MB upload through tunnel `name`, both checked by sha256. */
async function serves(name: string, agent: AgentProcess): Promise<void> {
  expectedHash ??= patternHash(SIZE);
  const base = relay.visitorUrl(name);
  const tail = () => `\nagent said:\n${agent.lines.slice(-15).join("\n")}`;
  const down = await download(at(base, `/pattern/${SIZE}`));
  expect(down, `download${tail()}`).toMatchObject({ status: 200, length: SIZE, sha256: expectedHash });
  const up = await upload(at(base, "/sink"), SIZE);
  expect(up.status, `upload: ${up.body.slice(0, 300)}${tail()}`).toBe(200);
  expect(JSON.parse(up.body)).toEqual({ length: SIZE, sha256: expectedHash });
}

/** Stops `agent` and waits for squid to log its tunnel (squid logs a tunnel when it ends): the user it authenticated. */
async function tunnelUser(network: CorpNetwork, agent: AgentProcess): Promise<string | undefined> {
  await agent.stop("SIGINT");
  const tunnel = new RegExp(`TCP_TUNNEL/200 \\d+ CONNECT ${relay.ip.replaceAll(".", "\\.")}:443 (\\S+) `);
  for (let i = 0; i < 40 && !tunnel.test(network.squidLog().join("\n")); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return tunnel.exec(network.squidLog().join("\n"))?.[1];
}

describe.skipIf(skip)("agents behind a Negotiate (Kerberos) proxy", () => {
  beforeAll(async () => {
    relay = await CorpRelay.start();
  }, 90_000);

  afterAll(async () => {
    await relay?.dispose();
  });

  describe("squid checking Kerberos tickets", () => {
    const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos" } });

    beforeAll(() => corpnet.network.realm!.kinit());

    it("lets curl --proxy-negotiate through with alice's ticket, and not without one (the rig)", async () => {
      const { network } = corpnet;
      const realm = network.realm!;
      expect(network.proxyUrl).toBe(`http://${realm.proxyHost}:3128`);
      const curl = (cache: string) =>
        network.run(
          [
            ...["curl", "-sS", "-i", "--max-time", "10", "--proxy-negotiate", "-U", ":", "--proxy", network.proxyUrl],
            ...["--cacert", relay.caFile, `${relay.url}/`],
          ],
          { env: { ...process.env, ...realm.clientEnv(cache) } },
        );
      const through = await network.run(
        [
          ...["curl", "-sS", "--max-time", "10", "--proxy-negotiate", "-U", ":", "--proxy", network.proxyUrl],
          ...["--cacert", relay.caFile, `${relay.url}/`],
        ],
        { env: { ...process.env, ...realm.clientEnv() } },
      );
      expect(through, "with a ticket").toMatchObject({ status: 0, output: expect.stringContaining("Burrow relay") });
      const refused = await curl(realm.cache("nobody"));
      expect(refused.output, "without a ticket").toContain("407");
      expect(network.squidLog().join("\n")).toContain(` ${realm.principal} `);
    });
  });

  describe("squid taking Kerberos or NTLM inside Negotiate", () => {
    const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos-or-ntlm" } });

    it("answers an NTLMSSP token inside Negotiate with an NTLM challenge inside Negotiate (the rig)", async () => {
      const { network } = corpnet;
      // An NTLM Negotiate message (MS-NLMP 2.2.1.1), as Windows sends one when it has no ticket.
      const type1 = "TlRMTVNTUAABAAAABoIIAAAAAAAAAAAAAAAAAAAAAAA=";
      const answer = await network.run([
        ...["curl", "-sS", "-i", "--max-time", "10", "--proxy", network.proxyUrl],
        ...["--proxy-header", `Proxy-Authorization: Negotiate ${type1}`, "-p", `${relay.url}/`],
      ]);
      expect(answer.output).toMatch(/HTTP\/1\.1 407/);
      expect(answer.output).toMatch(/^Proxy-Authenticate: Negotiate TlRMTVNTUAACAAAA/m);
    });
  });

  describe("squid whose keytab is stale (the proxy's key changed since)", () => {
    const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos" } });

    it("has a Bun agent exit 5 after one refused ticket, naming its principal and the keytab", async () => {
      const { network } = corpnet;
      const realm = network.realm!;
      realm.rekeyProxy();
      realm.kinit();
      const agent = corpnet.spawn("bun", "stale-keytab", { HTTPS_PROXY: network.proxyUrl, ...realm.clientEnv() });
      expect(await exitOf(agent)).toBe(5);
      expect(agent.output).toMatch(
        new RegExp(
          `^error: .*refused the Kerberos ticket of ${realm.principal} for HTTP@${realm.proxyHost.replaceAll(".", "\\.")} \\(407`,
          "m",
        ),
      );
      expect(agent.output).toMatch(/^ {2}hint: .*klist.*keytab/m);
      // One CONNECT with the ticket, refused; no second try.
      const refused = network.squidLog().filter((line) => / TCP_DENIED\/407 .* CONNECT /.test(line));
      expect(refused.length, refused.join("\n")).toBeLessThanOrEqual(2);
    }, 40_000);
  });

  describe("squid checking Kerberos tickets, cutting every connection after 3 s", () => {
    const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos", cut: { everySeconds: 3 } } });

    beforeAll(() => corpnet.network.realm!.kinit());

    it("has a Bun agent come back after each cut with a fresh ticket on the new connection", async () => {
      const { network } = corpnet;
      const realm = network.realm!;
      const name = "krb-cut";
      const agent = corpnet.spawn("bun", name, { HTTPS_PROXY: network.proxyUrl, ...realm.clientEnv() });
      await agent.ready();
      for (let up = 1; up < 3; up++) await agent.ready(agent.lines.length);
      expect(network.cuts.length).toBeGreaterThanOrEqual(2);
      const answer = await visit(at(relay.visitorUrl(name), "/status/201"));
      expect(answer.status).toBe(201);
      // Each connection authenticated on its own: squid logged the cut tunnels as alice's.
      const tunnels = () =>
        network.squidLog().filter((line) => line.includes(" TCP_TUNNEL/200 ") && line.includes(` ${realm.principal} `));
      // squid writes a tunnel's line once the tunnel has ended, maybe a moment after the agent saw it end.
      for (let i = 0; i < 40 && tunnels().length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(tunnels().length, network.squidLog().join("\n")).toBeGreaterThanOrEqual(2);
    }, 60_000);
  });

  describe("squid offering Negotiate (Kerberos only) and NTLM, as two schemes", () => {
    const corpnet = corp({
      egress: "squid",
      kerberos: true,
      squid: { negotiate: "kerberos", auth: { scheme: "ntlm", user: NTLM_USER, password: "any" } },
    });

    // A Kerberos-only Negotiate helper refuses an NTLMSSP token: NTLM goes in its own scheme.
    for (const runtime of ["node", "bun"] as const) {
      it(`has a ${runtime} agent without a ticket use the NTLM scheme with the credentials given`, async () => {
        const { network } = corpnet;
        const realm = network.realm!;
        const env = networkEnv({ HTTPS_PROXY: network.proxyUrl, ...realm.clientEnv(realm.cache(`none-${runtime}`)) });
        const doctor = new AgentProcess(runtime, ["doctor", "--relay", relay.url, "--ca", relay.caFile], env, {
          netns: network.ns,
        });
        corpnet.agents.push(doctor);
        expect(await exitOf(doctor), doctor.output).toBe(0);
        expect(doctor.output).toMatch(/^ok\s+connect\s.*\(NTLM as "CORP\\bob": 1 attempt, 1 connection\)/m);
      }, 40_000);
    }
  });

  for (const runtime of ["node", "bun", "deno", "executable"] as const) negotiateSuite(runtime);
});

function negotiateSuite(runtimeName: RuntimeName | "executable"): void {
  const kerberos = runtimeName !== "node";
  describe(`a ${runtimeName} agent`, () => {
    let runtime: AgentRuntime;
    beforeAll(() => {
      // The executable alone in a directory; the PATH stays, for `ip netns exec` to be found.
      runtime =
        runtimeName === "executable"
          ? executableLauncher(inject("agentExecutable"), { keepPath: true })
          : runtimeName === "deno"
            ? denoNegotiate
            : runtimeName;
    });

    describe("behind squid checking Kerberos tickets", () => {
      const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos" } });

      beforeAll(() => corpnet.network.realm!.kinit());

      if (kerberos)
        it("authenticates with the user's Kerberos ticket and moves 20 MB each way", async () => {
          const { network } = corpnet;
          const realm = network.realm!;
          const name = `krb-${runtimeName}`;
          const agent = corpnet.spawn(runtime, name, { HTTPS_PROXY: network.proxyUrl, ...realm.clientEnv() });
          await agent.ready();
          await serves(name, agent);
          expect(await tunnelUser(network, agent)).toBe(realm.principal);
        }, 120_000);

      if (kerberos)
        it("has agent doctor say the proxy took Negotiate as the ticket's principal", async () => {
          const { network } = corpnet;
          const realm = network.realm!;
          const env = networkEnv({ HTTPS_PROXY: network.proxyUrl, ...realm.clientEnv() });
          const doctor = new AgentProcess(runtime, ["doctor", "--relay", relay.url, "--ca", relay.caFile], env, {
            netns: network.ns,
          });
          corpnet.agents.push(doctor);
          expect(await exitOf(doctor), doctor.output).toBe(0);
          expect(doctor.output).toMatch(
            new RegExp(`^ok\\s+connect\\s.*\\(Negotiate as "${realm.principal}": 1 attempt, 1 connection\\)`, "m"),
          );
        }, 40_000);

      if (!kerberos)
        it("exits 5 saying Node cannot use Kerberos, and naming the Bun agent and the executable", async () => {
          const { network } = corpnet;
          const agent = corpnet.spawn(runtime, `krb-${runtimeName}`, {
            HTTPS_PROXY: network.proxyUrl,
            ...network.realm!.clientEnv(),
          });
          expect(await exitOf(agent)).toBe(5);
          expect(agent.output).toMatch(/^error: .*Negotiate.*Node has no FFI/m);
          expect(agent.output).toMatch(/^ {2}hint: .*Bun.*executable/m);
        }, 40_000);

      if (kerberos)
        it("without a ticket or credentials, exits 5 saying kinit, with the realm", async () => {
          const { network } = corpnet;
          const realm = network.realm!;
          const cache = realm.cache(`none-${runtimeName}`);
          const agent = corpnet.spawn(runtime, `nokrb-${runtimeName}`, {
            HTTPS_PROXY: network.proxyUrl,
            ...realm.clientEnv(cache),
          });
          expect(await exitOf(agent)).toBe(5);
          expect(agent.output).toMatch(/^error: .*Negotiate.*No Kerberos credentials available/m);
          expect(agent.output).toContain(cache);
          expect(agent.output).toMatch(new RegExp(`^ {2}hint: run \`kinit YOUR_USER@${realm.realm.replace(".", "\\.")}\``, "m"));
        }, 40_000);

      if (runtimeName === "deno")
        it("under `deno task agent` (no --allow-ffi), exits 5 naming `deno task agent-negotiate`", async () => {
          const { network } = corpnet;
          const agent = corpnet.spawn("deno", "krb-noffi", { HTTPS_PROXY: network.proxyUrl, ...network.realm!.clientEnv() });
          expect(await exitOf(agent)).toBe(5);
          expect(agent.output).toMatch(/^error: .*Negotiate: Deno did not grant --allow-ffi/m);
          expect(agent.output).toMatch(/^ {2}hint: run the agent with `deno task agent-negotiate`/m);
        }, 40_000);

      if (kerberos)
        it("given the proxy by IP address, exits 5 saying to give its host name", async () => {
          const { network } = corpnet;
          const byIp = network.proxyUrl.replace(network.realm!.proxyHost, network.hostIp);
          const agent = corpnet.spawn(runtime, `krbip-${runtimeName}`, { HTTPS_PROXY: byIp, ...network.realm!.clientEnv() });
          expect(await exitOf(agent)).toBe(5);
          expect(agent.output).toContain(`Negotiate: the proxy is given by its IP address (${network.hostIp})`);
          expect(agent.output).toMatch(/^ {2}hint: give the proxy by its host name/m);
        }, 40_000);
    });

    describe("behind squid taking Kerberos or NTLM inside Negotiate", () => {
      const corpnet = corp({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos-or-ntlm" } });

      it(`without a ticket, with credentials, sends NTLM inside Negotiate and moves 20 MB each way`, async () => {
        const { network } = corpnet;
        const realm = network.realm!;
        const name = `ntlm-${runtimeName}`;
        const proxy = network.proxyUrl.replace("http://", `http://${NTLM_URL_USER}:any@`);
        const agent = corpnet.spawn(runtime, name, {
          HTTPS_PROXY: proxy,
          ...realm.clientEnv(realm.cache(`none-${runtimeName}`)),
        });
        await agent.ready();
        await serves(name, agent);
        expect(agent.output).not.toContain("any@");
        // squid's log escapes the backslash of DOMAIN\user.
        expect(await tunnelUser(network, agent)).toBe(NTLM_USER.replace("\\", "\\\\"));
      }, 120_000);
    });
  });
}
