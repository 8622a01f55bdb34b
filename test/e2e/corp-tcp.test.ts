import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand, type RuntimeName } from "../_agent.ts";
import { CorpNetwork, CorpRelay, networkEnv, skipCorp } from "../_corp.ts";
import { ntlmVerdicts, skipNtlmVerifier } from "../_ntlm-verifier.ts";
import { PacRig } from "../_pac.ts";
import { ROOT } from "../_relay.ts";
import { type RunResult, type Sshd, skipServices, sshRun, startSshd } from "../_services.ts";
import { transportOf } from "./_corp.ts";

// TCP tunnels with both ends in simulated corporate networks (test/_corp.ts):
//
//   agent's network: mitmproxy inspecting TLS and refusing WebSocket upgrades is the only way
//     out; sshd on its loopback, `agent --tcp` beside it (on the HTTPS transport, --ca mitmproxy's)
//   visitors' networks: squid asking for Basic (with a PAC file naming it, and an idle timeout
//     of 3 s), squid checking NTLMv2 passwords (and offering Digest), and a second
//     WebSocket-refusing mitmproxy
//
// Each visitor runs ssh and scp in its network with `agent connect %n --stdio` as ProxyCommand.
// The relay sits outside, on workerd (the "cloudflare" project) or self-hosted on Node (the
// "selfhost" project), reached at https://<its address>:443 by both sides.

const skip = skipCorp("the TCP tunnels through corporate networks") || skipServices("the TCP tunnels through corporate networks");
const skipNtlm = !skip && skipNtlmVerifier("the TCP tunnel's visitor behind squid checking NTLMv2 passwords");

const MB = 1024 * 1024;
/** A few MB each way: the agent's side is the HTTPS transport through a proxy that buffers each body. */
const SIZE = 8 * MB;
const NAME = "devbox";
const BASIC = { user: "corp user", password: "p@ss:w/rd" };
const NTLM = { domain: "CORP", user: "alice", password: "s3cret pass" };
/** The NTLM squid offers Digest too, for this account. */
const DIGEST = { scheme: "digest" as const, user: "bob", password: 'digest, "pass"' };
/** Squid cuts a tunnel with no byte either way for this long; heartbeats must keep a quiet session up. */
const IDLE_SECONDS = 3;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** An argument for the shell that runs ssh's ProxyCommand, with ssh's own % escaped (%n stays). */
function quote(arg: string): string {
  return arg === "%n" ? arg : `'${arg.replaceAll("%", "%%").replaceAll("'", `'\\''`)}'`;
}

/**
 * The tunnels to `host` that squid logged as begun at `since` (Date.now()) or later, once there
 * is one: squid logs a tunnel when it ends (after ssh, its ProxyCommand), with its duration.
 */
async function tunnelsSince(network: CorpNetwork, host: string, since: number): Promise<string[]> {
  const logged = () =>
    network.squidLog().filter((line) => {
      // "1796610007.147   1137 10.203.2.2 TCP_TUNNEL/200 6722 CONNECT 10.203.0.1:443 corp user ..."
      const [end, elapsed] = line.trim().split(/\s+/).map(Number) as [number, number];
      const begun = end * 1000 - elapsed >= since - 1; // milliseconds, rounded each
      return begun && line.includes(" TCP_TUNNEL/200 ") && line.includes(` CONNECT ${host}:443 `);
    });
  for (let i = 0; i < 100 && logged().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50));
  return logged();
}

describe.skipIf(skip)("ssh and scp through a TCP tunnel, with the agent and its visitors in corporate networks", () => {
  let relay: CorpRelay;
  /** The agent's network: WebSockets refused, TLS inspected. */
  let office: CorpNetwork;
  let sshd: Sshd;
  let agent: AgentProcess;
  /** Visitors' networks. */
  let basic: CorpNetwork;
  let pac: PacRig;
  let ntlm: CorpNetwork | undefined;
  let noWebSockets: CorpNetwork;
  let dir: string;
  let key: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "burrow-corp-tcp-"));
    key = randomBytes(18).toString("base64url");
    writeFileSync(join(dir, "keys"), `${key}\n`);
    relay = await CorpRelay.start();
    [office, basic, ntlm, noWebSockets] = await Promise.all([
      CorpNetwork.create({ egress: "mitm", mitm: { blockWebSockets: true } }),
      CorpNetwork.create({ egress: "squid", squid: { auth: BASIC, idleTimeoutSeconds: IDLE_SECONDS } }),
      skipNtlm ? undefined : CorpNetwork.create({ egress: "squid", squid: { ntlm: NTLM, auth: DIGEST } }),
      CorpNetwork.create({ egress: "mitm", mitm: { blockWebSockets: true } }),
    ]);
    pac = await PacRig.start(basic, { hosts: {} });
    sshd = await startSshd({ netns: office.ns });
    agent = new AgentProcess(
      "node",
      [
        ...["--tcp", String(sshd.port), "--relay", relay.url, "--name", NAME],
        ...["--ca", office.proxyCaFile, "--connect-key-file", join(dir, "keys")],
      ],
      networkEnv({ HTTPS_PROXY: office.proxyUrl }),
      { netns: office.ns },
    );
    await agent.ready();
  }, 120_000);

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await sshd?.stop();
    await pac?.dispose();
    await Promise.all([office, basic, ntlm, noWebSockets].map((network) => network?.dispose()));
    await relay?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  /**
   * ssh and scp in `network`, to `${user}@devbox` through `agent connect %n --stdio` on `runtime`
   * with `args` and `env` (the proxy, its credentials), as a visitor's ~/.ssh/config would have it.
   */
  function visitor(network: CorpNetwork, runtime: RuntimeName, args: string[], env: Record<string, string>) {
    const [program, argv] = agentCommand(runtime, ["connect", "%n", "--stdio", "--relay", relay.url, ...args]);
    const options = [...sshd.sshOptions, "-o", `ProxyCommand=${[program, ...argv].map(quote).join(" ")}`];
    // What a user's shell passes on: none of the test's own BURROW_* or proxy variables.
    const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("BURROW_")));
    const runEnv = { ...base, ...networkEnv({ BURROW_CONNECT_KEY: key, ...env }) };
    const run = (command: string, more: string[]): Promise<RunResult> =>
      sshRun("ip", ["netns", "exec", network.ns, command, ...options, ...more], {
        env: runEnv,
        cwd: ROOT, // where `deno task` finds its deno.json
        timeoutMs: 90_000,
      });
    const at = `${sshd.user}@${NAME}`;
    return {
      ssh: (command: string) => run("ssh", [at, command]),
      /** `scp from to`, where `:path` is a path on the ssh server. */
      scp: (from: string, to: string) =>
        run(
          "scp",
          [from, to].map((path) => (path.startsWith(":") ? `${at}${path}` : path)),
        ),
    };
  }

  /** An scp of SIZE random bytes up to the server and back, each file hash-checked where it landed. */
  async function copiesBothWays(client: ReturnType<typeof visitor>, label: string): Promise<void> {
    const bytes = randomBytes(SIZE);
    const [local, remote, back] = [`${label}.up`, `${label}.remote`, `${label}.back`];
    writeFileSync(join(dir, local), bytes);
    const up = await client.scp(join(dir, local), `:${join(sshd.dir, remote)}`);
    expect(up.code, `scp up:\n${up.stderr}\nagent said:\n${agent.output}`).toBe(0);
    expect(sha256(readFileSync(join(sshd.dir, remote)))).toBe(sha256(bytes));
    const down = await client.scp(`:${join(sshd.dir, remote)}`, join(dir, back));
    expect(down.code, `scp down:\n${down.stderr}\nagent said:\n${agent.output}`).toBe(0);
    expect(sha256(readFileSync(join(dir, back)))).toBe(sha256(bytes));
  }

  it("has the agent fall back to the HTTPS transport behind the WebSocket-refusing proxy", () => {
    expect(transportOf(agent), agent.output).toBe("https");
    expect(agent.output).toMatch(/^warning: .*403.*; switching to the HTTPS transport$/m);
  });

  it("runs a command and copies files both ways for a Node visitor behind squid with Basic auth", async () => {
    const client = visitor(basic, "node", ["--ca", relay.caFile, "--heartbeat", "1"], { HTTPS_PROXY: basic.proxyUrl });
    const start = Date.now();
    const result = await client.ssh("echo hello from; hostname -I");
    expect(result.code, `${result.stderr}\nagent said:\n${agent.output}`).toBe(0);
    // The command ran in the agent's network: the sshd's host has the office's address.
    expect(result.stdout).toMatch(new RegExp(`^hello from\\n.*\\b${office.nsIp.replaceAll(".", "\\.")}\\b`));
    expect(result.stderr).toBe("");
    expect(await tunnelsSince(basic, relay.ip, start)).toEqual([expect.stringMatching(/ CONNECT \S+ corp user /)]);
    await copiesBothWays(client, "basic");
  }, 120_000);

  it("gives ssh the proxy's refusal of wrong credentials at once, with its hint, instead of retrying", async () => {
    const wrong = basic.proxyUrl.replace(encodeURIComponent(BASIC.password), "xyzzy-not-it");
    const client = visitor(basic, "node", ["--ca", relay.caFile], { HTTPS_PROXY: wrong });
    const result = await client.ssh("echo hello");
    expect(result.code).toBe(255); // ssh's own: the ProxyCommand closed the connection
    expect(result.stderr).toMatch(/^error: .*refused the Basic credentials of user "corp user" \(407 /m);
    expect(result.stderr).toMatch(/^ {2}hint: check the user name and the password, from the proxy URL/m);
    expect(result.stderr).not.toContain("xyzzy-not-it");
  }, 30_000);

  it.skipIf(skipNtlm)(
    "runs a command and copies files both ways for a Bun visitor behind squid checking NTLMv2 passwords",
    async () => {
      const network = ntlm!;
      const seen = ntlmVerdicts(network.dir).length;
      const client = visitor(network, "bun", ["--ca", relay.caFile], {
        HTTPS_PROXY: `http://${network.hostIp}:${network.proxyPort}`,
        BURROW_PROXY_USER: `${NTLM.domain}\\${NTLM.user}`,
        BURROW_PROXY_PASSWORD: NTLM.password,
      });
      const result = await client.ssh("echo hello");
      expect(result.code, `${result.stderr}\nagent said:\n${agent.output}`).toBe(0);
      expect(result.stdout).toBe("hello\n");
      expect(ntlmVerdicts(network.dir).slice(seen)).toEqual(["accepted NTLMv2 response from CORP\\alice"]);
      await copiesBothWays(client, "ntlm");
    },
    120_000,
  );

  it.skipIf(skipNtlm)(
    "runs a command for a Node visitor pinned to Digest by --proxy-auth behind the same squid",
    async () => {
      const network = ntlm!;
      const seen = ntlmVerdicts(network.dir).length;
      const start = Date.now();
      const client = visitor(network, "node", ["--ca", relay.caFile, "--proxy-auth", "digest"], {
        HTTPS_PROXY: `http://${network.hostIp}:${network.proxyPort}`,
        BURROW_PROXY_USER: DIGEST.user,
        BURROW_PROXY_PASSWORD: DIGEST.password,
      });
      const result = await client.ssh("echo hello");
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toBe("hello\n");
      expect(await tunnelsSince(network, relay.ip, start)).toEqual([expect.stringMatching(/ CONNECT \S+ bob /)]);
      expect(ntlmVerdicts(network.dir).slice(seen)).toEqual([]);
    },
    60_000,
  );

  it("keeps a quiet ssh session on its one tunnel through squid past squid's idle timeout, with heartbeats", async () => {
    const client = visitor(basic, "node", ["--ca", relay.caFile, "--heartbeat", "1", "--debug"], {
      HTTPS_PROXY: basic.proxyUrl,
    });
    const result = await client.ssh(`sleep ${IDLE_SECONDS * 2 + 1}; echo still here`);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("still here\n");
    // The session would survive a cut too (it resumes): the connection must not have been cut.
    expect(result.stderr).toMatch(/^transport: websocket$/m);
    expect(result.stderr).not.toMatch(/^(connection lost \(|connection to the relay resumed|connected to tunnel \S+ again)/m);
  }, 60_000);

  it("finds the visitor's proxy with a PAC file", async () => {
    const url = pac.serve(
      "/proxy.pac",
      `function FindProxyForURL(url, host) { return host === "${relay.ip}" ? "PROXY ${basic.hostIp}:3128" : "DIRECT"; }`,
    );
    const client = visitor(basic, "node", ["--ca", relay.caFile, "--proxy-pac", url, "--heartbeat", "1", "--debug"], {
      BURROW_PROXY_USER: BASIC.user,
      BURROW_PROXY_PASSWORD: BASIC.password,
    });
    const start = Date.now();
    const result = await client.ssh("echo hello");
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("hello\n");
    expect(result.stderr).toContain(`the PAC file (${url}, from --proxy-pac) says "PROXY ${basic.hostIp}:3128" for ${relay.ip}`);
    expect(pac.fetched).toContain("/proxy.pac");
    expect(await tunnelsSince(basic, relay.ip, start)).toEqual([expect.stringMatching(/ CONNECT \S+ corp user /)]);
  }, 60_000);

  it("runs a command and copies files both ways for a Deno visitor behind a WebSocket-refusing proxy too, on the HTTPS transport", async () => {
    const client = visitor(noWebSockets, "deno", ["--ca", noWebSockets.proxyCaFile], { HTTPS_PROXY: noWebSockets.proxyUrl });
    const result = await client.ssh("echo hello");
    expect(result.code, `${result.stderr}\nagent said:\n${agent.output}`).toBe(0);
    expect(result.stdout).toBe("hello\n");
    // --stdio says only warnings: the switch to the HTTPS transport is one.
    expect(result.stderr).toMatch(/^warning: .*403.*; switching to the HTTPS transport$/m);
    await copiesBothWays(client, "nows");
  }, 120_000);
});
