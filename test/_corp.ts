// A simulated corporate network for end-to-end tests, on Linux network namespaces (needs root or
// CAP_NET_ADMIN, iproute2, iptables, ss, openssl, squid and mitmproxy):
//
//   host namespace                                      corp namespace "burrow-<pid>-<n>"
//   relay (workerd) https://10.R.0.1:443  ◀──┐
//   squid / mitmproxy on 10.A.B.1 ◀──────────┴── veth ── 10.A.B.2: agent, origin on 127.0.0.1
//
// The namespace reaches the host namespace only, through its veth; its OUTPUT chain lets out
// what the egress mode allows (443 anywhere, or only the proxy's port) and rejects the rest.
// The relay's TLS address sits on a veth of its own in the host namespace, so that one relay
// serves every network of the process; visitors keep using its plain-http 127.0.0.1 port.

import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { PROXY_ENV_VARS } from "../agent/src/net/proxy.ts";
import { Realm } from "./_kerberos.ts";
import { type NtlmAccount, ntlmVerifier } from "./_ntlm-verifier.ts";
import { Child, processAlive, waitForListen } from "./_process.ts";
import { Relay, type RelayOptions, ROOT } from "./_relay.ts";

const run = promisify(execFile);

/** Runs a command to completion; throws with its stderr on failure. */
function sh(command: string, args: string[], input?: string): string {
  return execFileSync(command, args, { encoding: "utf8", stdio: ["pipe", "pipe", "pipe"], input });
}

function quietly(action: () => unknown): void {
  try {
    action();
  } catch {
    // best effort: cleanup of something that may not exist
  }
}

/** A Child in the namespace `ns` (`ip netns exec` execs in place: the pid is the program's). */
function childIn(ns: string, label: string, argv: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string }): Child {
  return new Child(label, "ip", ["netns", "exec", ns, ...argv], { cwd: options.cwd ?? ROOT, env: options.env ?? process.env });
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Availability

const TOOLS = [
  ["ip", ["-V"]],
  ["iptables", ["--version"]],
  ["ss", ["-V"]],
  ["openssl", ["version"]],
  ["squid", ["-v"]],
  ["mitmdump", ["--version"]],
] as const;

let availability: { ok: true } | { ok: false; reason: string } | undefined;

/**
 * Whether this machine can run corporate-network tests: root (or CAP_NET_ADMIN) for network
 * namespaces, and the tools. Checked once, synchronously (for describe.skipIf).
 */
export function corpAvailable(): { ok: true } | { ok: false; reason: string } {
  if (availability) return availability;
  const missing = TOOLS.filter(([tool, args]) => {
    try {
      sh(tool, [...args]);
      return false;
    } catch {
      return true;
    }
  }).map(([tool]) => tool);
  if (missing.length > 0) {
    availability = { ok: false, reason: `missing tools: ${missing.join(", ")}` };
    return availability;
  }
  const probe = `burrow-probe-${process.pid}`;
  try {
    sh("ip", ["netns", "add", probe]);
    sh("ip", ["netns", "exec", probe, "iptables", "-L", "OUTPUT"]);
    availability = { ok: true };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    availability = { ok: false, reason: `cannot create a network namespace (needs root or CAP_NET_ADMIN): ${stderr}` };
  } finally {
    quietly(() => sh("ip", ["netns", "del", probe]));
  }
  return availability;
}

/**
 * For describe.skipIf: true, after a loud warning, when corp tests cannot run here; with
 * BURROW_REQUIRE_CORP=1 (CI) it throws instead, so that they cannot be skipped unnoticed.
 */
export function skipCorp(what: string): boolean {
  const available = corpAvailable();
  if (available.ok) return false;
  const message = [
    "",
    `!!! SKIPPING ${what}: ${available.reason}`,
    "!!! They need Linux, root (network namespaces), iproute2, iptables, ss, openssl, squid and mitmproxy.",
    "",
  ].join("\n");
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Address space: a /24 per network (and one for the relay), claimed with a lock file so that
// two vitest workers never pick the same one. Claims, namespaces, links and processes left by
// a test process that died are removed on first use.

const CLAIMS = join(tmpdir(), "burrow-corp-subnets");
let swept = false;

/**
 * Removes what dead test processes left behind: what runs in their namespaces, the namespaces,
 * their links, their proxies and relays, temp dirs and claims.
 */
function sweep(): void {
  if (swept) return;
  swept = true;
  const dead = (pid: string | undefined) => pid !== undefined && !processAlive(Number(pid));
  for (const line of sh("ip", ["netns", "list"]).split("\n")) {
    const match = /^(burrow-(\d+)-\d+)\b/.exec(line);
    if (!match || !dead(match[2])) continue;
    quietly(() => {
      for (const pid of sh("ip", ["netns", "pids", match[1]!]).split("\n").filter(Boolean)) {
        quietly(() => process.kill(Number(pid), "SIGKILL"));
      }
    });
    quietly(() => sh("ip", ["netns", "del", match[1]!]));
    rmSync(`/etc/netns/${match[1]}`, { recursive: true, force: true }); // a realm's hosts file
  }
  for (const match of sh("ip", ["-o", "link", "show"]).matchAll(/^\d+: (bw[rh](\d+)[a-z]\d+)[@:]/gm)) {
    if (dead(match[2])) quietly(() => sh("ip", ["link", "del", match[1]!]));
  }
  const claimed: [prefix: string, owner: string][] = [];
  quietly(() => {
    for (const file of readdirSync(CLAIMS)) claimed.push([file, readFileSync(join(CLAIMS, file), "utf8")]);
  });
  const abandoned = claimed.filter(([, owner]) => dead(owner)).map(([prefix]) => prefix);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline = "";
    quietly(() => {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    });
    // Proxies, whose command line names a dead process's temp dir.
    if (dead(/burrow-corp-(\d+)-/.exec(cmdline)?.[1])) quietly(() => process.kill(Number(entry), "SIGKILL"));
    // Relays listening on an abandoned subnet.
    const config = cmdline.split("\0").find((arg) => arg.endsWith("/relay.capnp"));
    if (config && abandoned.length > 0) {
      quietly(() => {
        const text = readFileSync(config, "utf8");
        if (!abandoned.some((prefix) => text.includes(`"${prefix}.1:443"`))) return;
        process.kill(Number(entry), "SIGKILL");
        rmSync(dirname(config), { recursive: true, force: true });
      });
    }
  }
  for (const entry of readdirSync(tmpdir())) {
    if (dead(/^burrow-corp-(\d+)-/.exec(entry)?.[1]))
      quietly(() => rmSync(join(tmpdir(), entry), { recursive: true, force: true }));
  }
  for (const prefix of abandoned) quietly(() => unlinkSync(join(CLAIMS, prefix)));
  removeShm((name) => dead(/^burrow(\d+)x\d+-/.exec(name)?.[1]));
}

/** Removes the /dev/shm segments (of squids) whose names `match`. */
function removeShm(match: (name: string) => boolean): void {
  quietly(() => {
    for (const name of readdirSync("/dev/shm")) if (match(name)) quietly(() => unlinkSync(join("/dev/shm", name)));
  });
}

let claims = 0;

/** Claims a free 10.A.B.0/24 (A in 200..249) for this process; returns "10.A.B" and a release. */
function claimSubnet(): { prefix: string; release(): void } {
  sweep();
  execFileSync("mkdir", ["-p", "-m", "1777", CLAIMS]);
  const used = `${sh("ip", ["-4", "-o", "addr", "show"])}\n${sh("ip", ["-4", "route", "show", "table", "all"])}`;
  const start = (process.pid % 50) * 256 + (claims++ % 256);
  for (let i = 0; i < 50 * 256; i++) {
    const slot = (start + i) % (50 * 256);
    const prefix = `10.${200 + Math.floor(slot / 256)}.${slot % 256}`;
    if (new RegExp(`(^|\\s)${prefix.replaceAll(".", "\\.")}\\.`, "m").test(used)) continue;
    const file = join(CLAIMS, prefix);
    try {
      writeFileSync(file, String(process.pid), { flag: "wx" });
    } catch {
      const owner = Number(readFileSync(file, "utf8") || 0);
      if (owner && (owner === process.pid || processAlive(owner))) continue;
      quietly(() => unlinkSync(file));
      i--; // try the same slot again
      continue;
    }
    return { prefix, release: () => quietly(() => unlinkSync(file)) };
  }
  throw new Error("no free 10.200-249.x.0/24 subnet for a corp network");
}

// ---------------------------------------------------------------------------------------------
// Certificates

/** The test relay CA of this process: "Burrow Test Relay CA", made with openssl when first needed. */
let ca: { dir: string; cert: string; key: string } | undefined;

function testCa(): { dir: string; cert: string; key: string } {
  if (ca) return ca;
  const dir = mkdtempSync(join(tmpdir(), `burrow-corp-${process.pid}-ca-`));
  const [cert, key] = [join(dir, "relay-ca.pem"), join(dir, "relay-ca.key")];
  sh("openssl", [
    ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-sha256"],
    ...["-keyout", key, "-out", cert, "-subj", "/O=Burrow tests/CN=Burrow Test Relay CA"],
    ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
  ]);
  ca = { dir, cert, key };
  return ca;
}

/** Removes the test CA once no relay uses it (a later relay makes a new one). */
function dropTestCa(): void {
  if (ca) rmSync(ca.dir, { recursive: true, force: true });
  ca = undefined;
}

let liveRelays = 0;

/** A server certificate from the test CA for `ip` (and relay.burrow.test), written to `dir`. */
function relayCertificate(dir: string, ip: string): { cert: string; key: string } {
  const { cert: caCert, key: caKey } = testCa();
  const [cert, key, csr, ext] = ["relay.pem", "relay.key", "relay.csr", "relay.ext"].map((name) => join(dir, name)) as [
    string,
    string,
    string,
    string,
  ];
  sh("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=relay.burrow.test"]);
  writeFileSync(
    ext,
    [
      `subjectAltName=IP:${ip},DNS:relay.burrow.test`,
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth",
      "",
    ].join("\n"),
  );
  sh("openssl", [
    ...["x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-CAcreateserial", "-days", "30", "-sha256"],
    ...["-out", cert, "-extfile", ext],
  ]);
  return { cert, key };
}

// ---------------------------------------------------------------------------------------------
// The relay, reachable from corp networks at https://<ip>

let relays = 0;

/**
 * A workerd relay with a TLS listener on https://<ip>:443 (a certificate for that IP from the
 * test CA) that every corp network of this process can reach, and its usual plain-http
 * 127.0.0.1 port for visitors.
 */
export class CorpRelay {
  private constructor(
    readonly relay: Relay,
    /** The relay's address, on a veth of its own in the host namespace. */
    readonly ip: string,
    /** PEM of "Burrow Test Relay CA", which issued the relay's certificate. */
    readonly caFile: string,
    private readonly link: string,
    private readonly dir: string,
    private readonly release: () => void,
  ) {}

  /** The relay on workerd unless `options.launcher` says otherwise. */
  static async start(options: Omit<RelayOptions, "tls"> = {}): Promise<CorpRelay> {
    const { prefix, release } = claimSubnet();
    const ip = `${prefix}.1`;
    const n = relays++;
    const link = `bwr${process.pid}r${n}`;
    const peer = `bwq${process.pid}r${n}`;
    const dir = mkdtempSync(join(tmpdir(), `burrow-corp-${process.pid}-relay-`));
    try {
      sh("ip", ["link", "add", link, "type", "veth", "peer", "name", peer]);
      sh("ip", ["addr", "add", `${ip}/32`, "dev", link]);
      sh("ip", ["link", "set", link, "up"]);
      sh("ip", ["link", "set", peer, "up"]);
      const { cert, key } = relayCertificate(dir, ip);
      const relay = await Relay.start({ launcher: "workerd", ...options, tls: { address: `${ip}:443`, cert, key } });
      liveRelays++;
      return new CorpRelay(relay, ip, testCa().cert, link, dir, release);
    } catch (error) {
      quietly(() => sh("ip", ["link", "del", link]));
      rmSync(dir, { recursive: true, force: true });
      release();
      throw error;
    }
  }

  /** What agents are given: `--relay https://<ip>`. */
  get url(): string {
    return `https://${this.ip}`;
  }

  /** The plain-http URL visitors (the test process) reach tunnel `name` at, by path. */
  visitorUrl(name: string): string {
    return `http://127.0.0.1:${this.relay.port}/t/${name}/`;
  }

  async dispose(): Promise<void> {
    await this.relay.dispose();
    quietly(() => sh("ip", ["link", "del", this.link]));
    rmSync(this.dir, { recursive: true, force: true });
    this.release();
    if (--liveRelays === 0) dropTestCa();
  }
}

// ---------------------------------------------------------------------------------------------
// The corp network

export type Egress = "direct443" | "squid" | "mitm";

export interface SquidOptions {
  /**
   * Proxy authentication, by scheme: "basic" (the default) through basic_ncsa_auth, "digest"
   * through digest_file_auth, both checking the password (any characters, but no ":" in the
   * user; squid lowercases a Basic user before its helper sees it, so give it in lowercase);
   * "ntlm" through ntlm_fake_auth, which runs the handshake and takes any password.
   */
  auth?: { scheme?: "basic" | "digest" | "ntlm"; user: string; password: string };
  /**
   * NTLM with real NTLMv2 checking (test/_ntlm-verifier.ts: gss-ntlmssp behind a squid helper):
   * `407 Proxy-Authenticate: NTLM`; a wrong password, domain or user, or an LM/NTLMv1 response,
   * is refused with another 407. The proxy URL carries `DOMAIN%5Cuser:password`. With `auth`
   * too, squid offers NTLM, then Basic. ntlmVerdicts(dir) lists what the verifier decided.
   */
  ntlm?: NtlmAccount;
  /**
   * Cuts every client connection this many seconds (0.1 to 0.2 s more) after squid accepted it.
   * Squid 5 cannot do that itself (client_lifetime stops applying once a CONNECT tunnel carries
   * a byte; after that only the idle read_timeout applies), so a reaper polling `ss` every
   * 100 ms aborts the sockets with `ss -K`:
   * - "close": squid's socket to the relay, so squid itself closes the agent's connection (FIN)
   * - "reset": squid's socket to the agent (the agent sees a reset)
   * - "alternate": one then the other
   */
  cut?: { everySeconds: number; how?: "close" | "reset" | "alternate" };
  /**
   * squid's read_timeout: cuts a tunnel idle (no byte either way) for this many seconds; squid
   * keeps time in whole seconds, so give or take one or two.
   */
  idleTimeoutSeconds?: number;
  /** Destination addresses the proxy's policy refuses to CONNECT to (squid answers 403). */
  deny?: string[];
  /**
   * Offers Negotiate, checked against the network's Kerberos realm (CorpOptions.kerberos);
   * "kerberos-or-ntlm" also takes an NTLMSSP token inside Negotiate: checked by the NTLMv2
   * verifier with `ntlm` (which squid then also offers as its own scheme), else ntlm_fake_auth.
   */
  negotiate?: "kerberos" | "kerberos-or-ntlm";
}

export interface MitmOptions {
  /** An addon answers requests with `Upgrade: websocket` with 403 "WebSockets are blocked by policy". */
  blockWebSockets?: boolean;
  /**
   * An addon removes `Upgrade` and `Connection` from every request, as proxies that do not know
   * WebSocket do: the relay receives a plain GET.
   */
  stripUpgrade?: boolean;
  /**
   * An addon lets WebSocket upgrades through, then drops every message both ways, as proxies
   * do that accept the upgrade but not the traffic after it. (mitmproxy 8 cannot kill a
   * WebSocket flow in transit: mitmproxy/mitmproxy#4711.)
   */
  dropWebSockets?: boolean;
  /**
   * mitmproxy's stream_large_bodies (e.g. "1m"): bodies above it stream. Unset (the default),
   * mitmproxy buffers every body whole, as many inspecting proxies do.
   */
  streamLargeBodies?: string;
}

export interface CorpOptions {
  egress: Egress;
  /** How the firewall refuses other egress: "reject" (TCP reset, ICMP otherwise; fast) or "drop". */
  block?: "reject" | "drop";
  squid?: SquidOptions;
  mitm?: MitmOptions;
  /** For mitm: the CA mitmproxy trusts for upstream (the relay's), default the test relay CA. */
  upstreamCaFile?: string;
  /** A Kerberos realm with its KDC for the network (test/_kerberos.ts); the proxy is then proxy.<domain>. */
  kerberos?: boolean;
}

/** A cut the reaper made: when (Date.now()), how, and squid's client socket. */
export interface Cut {
  at: number;
  how: "close" | "reset";
  client: string;
}

let networks = 0;
const SQUID_PORT = 3128;
const MITM_PORT = 8080;

/**
 * A network namespace wired to the host namespace by a veth pair, with a firewall that lets out
 * only what `egress` allows, and for "squid" and "mitm" that proxy running in the host
 * namespace on `hostIp`.
 */
export class CorpNetwork {
  /** The proxy's URL as a user would set it (credentials percent-encoded); "" for direct443. */
  proxyUrl = "";
  /** For mitm: PEM of the CA mitmproxy signs with (common name "mitmproxy"). */
  proxyCaFile = "";
  /** The cuts made so far (squid with `cut`). */
  readonly cuts: Cut[] = [];
  /** The network's Kerberos realm (with `kerberos`). */
  realm: Realm | undefined;
  private readonly children = new Set<Child>();
  private proxy: Child | undefined;
  /** squid's service name, which names its segments in /dev/shm. */
  private shm = "";
  private reaper: { stop(): Promise<void> } | undefined;

  private constructor(
    /** The namespace's name: burrow-<pid>-<n>. */
    readonly ns: string,
    /** The host namespace's end of the veth: where the proxies listen. */
    readonly hostIp: string,
    /** The namespace's own address. */
    readonly nsIp: string,
    /** Temp dir of configs, logs, CA files. */
    readonly dir: string,
    readonly options: CorpOptions,
    private readonly release: () => void,
  ) {}

  static async create(options: CorpOptions): Promise<CorpNetwork> {
    const n = networks++;
    const ns = `burrow-${process.pid}-${n}`;
    const { prefix, release } = claimSubnet();
    const dir = mkdtempSync(join(tmpdir(), `burrow-corp-${process.pid}-net${n}-`));
    const network = new CorpNetwork(ns, `${prefix}.1`, `${prefix}.2`, dir, options, release);
    try {
      network.wire(`bwh${process.pid}n${n}`, `bwp${process.pid}n${n}`);
      if (options.kerberos) network.realm = await Realm.start(network, squidUser());
      if (options.egress === "squid") await network.startSquid();
      if (options.egress === "mitm") await network.startMitm();
      return network;
    } catch (error) {
      await network.dispose();
      throw error;
    }
  }

  /** The proxy's port on hostIp (0 for direct443). */
  get proxyPort(): number {
    return { direct443: 0, squid: SQUID_PORT, mitm: MITM_PORT }[this.options.egress];
  }

  /** The proxy's output (mitmdump logs a line per flow); "" for direct443. */
  get proxyOutput(): string {
    return this.proxy?.output ?? "";
  }

  /** Squid's access log, a line per finished request or tunnel (written when it ends). */
  squidLog(): string[] {
    const file = join(this.dir, "access.log");
    return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
  }

  /** Starts `argv` inside the namespace (cwd: the repository); stopped by dispose() if still running. */
  exec(argv: string[], options: { label?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Child {
    const child = childIn(this.ns, options.label ?? `${this.ns}:${argv[0]}`, argv, options);
    this.children.add(child);
    void child.exited.then(() => this.children.delete(child));
    return child;
  }

  /** Runs `argv` inside the namespace to its end: its exit status and output. */
  async run(
    argv: string[],
    options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
  ): Promise<{ status: number | null; output: string }> {
    const child = this.exec(argv, options);
    const timer = setTimeout(() => void child.stop("SIGKILL"), options.timeoutMs ?? 30_000);
    const status = await child.exited;
    clearTimeout(timer);
    return { status, output: child.output };
  }

  /** Stops what runs in and for the network, then deletes the namespace (and so the veth). */
  async dispose(): Promise<void> {
    await this.reaper?.stop();
    await Promise.all([...this.children].map((child) => child.stop("SIGKILL")));
    // Nothing of theirs is worth a graceful exit (squid takes 1.5 s even with shutdown_lifetime 0),
    // but squid's shared memory segments outlive it.
    await this.proxy?.stop("SIGKILL");
    await this.realm?.stop();
    if (this.shm) removeShm((name) => name.startsWith(`${this.shm}-`));
    quietly(() => sh("ip", ["netns", "del", this.ns]));
    rmSync(this.dir, { recursive: true, force: true });
    this.release();
  }

  private wire(hostLink: string, peer: string): void {
    const inNs = (...args: string[]) => sh("ip", ["-n", this.ns, ...args]);
    sh("ip", ["netns", "add", this.ns]);
    sh("ip", ["link", "add", hostLink, "type", "veth", "peer", "name", peer]);
    sh("ip", ["link", "set", peer, "netns", this.ns]);
    sh("ip", ["addr", "add", `${this.hostIp}/24`, "dev", hostLink]);
    sh("ip", ["link", "set", hostLink, "up"]);
    inNs("link", "set", peer, "name", "eth0");
    inNs("addr", "add", `${this.nsIp}/24`, "dev", "eth0");
    inNs("link", "set", "eth0", "up");
    inNs("link", "set", "lo", "up");
    inNs("route", "add", "default", "via", this.hostIp);
    const allow =
      this.options.egress === "direct443"
        ? ["-A OUTPUT -p tcp --dport 443 -j ACCEPT"]
        : [`-A OUTPUT -p tcp -d ${this.hostIp} --dport ${this.proxyPort} -j ACCEPT`];
    const refuse =
      this.options.block === "drop"
        ? ["-A OUTPUT -j DROP"]
        : ["-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset", "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable"];
    const rules = [
      "*filter",
      ":OUTPUT ACCEPT [0:0]",
      "-A OUTPUT -o lo -j ACCEPT",
      "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
      ...allow,
      ...refuse,
      "COMMIT",
      "",
    ];
    sh("ip", ["netns", "exec", this.ns, "iptables-restore"], rules.join("\n"));
  }

  /**
   * Kills squid (its connections are reset) and starts it again with the same settings, as an
   * administrator's restart would: agents must come back through a fresh handshake.
   */
  async restartSquid(): Promise<void> {
    await this.reaper?.stop();
    await this.proxy?.stop("SIGKILL");
    if (this.shm) removeShm((name) => name.startsWith(`${this.shm}-`));
    quietly(() => unlinkSync(join(this.dir, "squid.pid")));
    await this.startSquid();
  }

  private async startSquid(): Promise<void> {
    const options = this.options.squid ?? {};
    const file = (name: string) => join(this.dir, name);
    const user = squidUser();
    const ntlm = options.ntlm ? ntlmVerifier(this.dir, options.ntlm) : undefined;
    const inside =
      options.negotiate === "kerberos-or-ntlm" ? (ntlm?.insideNegotiate ?? "/usr/lib/squid/ntlm_fake_auth") : undefined;
    const negotiate = options.negotiate && this.realm ? this.realm.squidConfig(inside) : [];
    // squid offers its schemes in the order of their auth_param lines.
    const schemes = [...negotiate, ...(ntlm?.config ?? []), ...(options.auth ? squidAuth(options.auth, file) : [])];
    const auth = schemes.length > 0 ? [...schemes, "acl authed proxy_auth REQUIRED", "http_access deny !authed"] : [];
    const config = [
      `http_port ${this.hostIp}:${SQUID_PORT}`,
      "visible_hostname burrow-test-corp-proxy",
      `pid_filename ${file("squid.pid")}`,
      `cache_log ${file("cache.log")}`,
      `access_log stdio:${file("access.log")}`,
      `coredump_dir ${this.dir}`,
      "cache deny all",
      "cache_mem 8 MB",
      "pinger_enable off",
      "shutdown_lifetime 0 seconds",
      `cache_effective_user ${user}`,
      ...(options.idleTimeoutSeconds ? [`read_timeout ${options.idleTimeoutSeconds} seconds`] : []),
      "acl SSL_ports port 443",
      "acl Safe_ports port 80 443",
      "acl CONNECT method CONNECT",
      "http_access deny !Safe_ports",
      "http_access deny CONNECT !SSL_ports",
      ...(options.deny?.length ? [`acl denied dst ${options.deny.join(" ")}`, "http_access deny denied"] : []),
      ...auth,
      "http_access allow all",
      "",
    ];
    writeFileSync(file("squid.conf"), config.join("\n"));
    // squid drops to cache_effective_user before it opens its logs.
    const { uid, gid } = { uid: Number(sh("id", ["-u", user])), gid: Number(sh("id", ["-g", user])) };
    const owned = [...["", "passwd", "digest-passwd", "squid.conf"].map(file), ...(ntlm?.files ?? [])];
    for (const path of owned) quietly(() => chownSync(path, uid, gid));
    // -n: a service name of its own, so that squids of parallel networks share nothing.
    const service = `burrow${process.pid}x${this.ns.split("-").at(-1)}`;
    this.shm = service;
    this.proxy = new Child(`squid:${this.ns}`, "squid", ["-N", "-f", file("squid.conf"), "-n", service], {
      cwd: this.dir,
      env: { ...process.env, ...this.realm?.squidEnv },
    });
    await waitForListen(this.proxy, SQUID_PORT, this.hostIp, 20_000);
    const encode = (text: string) => encodeURIComponent(text);
    const login = options.ntlm
      ? { user: `${options.ntlm.domain}\\${options.ntlm.user}`, password: options.ntlm.password }
      : options.auth;
    const credentials = login ? `${encode(login.user)}:${encode(login.password)}@` : "";
    this.proxyUrl = `http://${credentials}${this.realm?.proxyHost ?? this.hostIp}:${SQUID_PORT}`;
    if (options.cut) this.reaper = this.startReaper(this.proxy.pid, options.cut.everySeconds * 1000, options.cut.how ?? "close");
  }

  /**
   * Every 100 ms, lists squid's established sockets (`ss -p`), and aborts (`ss -K`) each
   * connection from a client `everyMs` after it was first seen.
   */
  private startReaper(pid: number, everyMs: number, how: "close" | "reset" | "alternate"): { stop(): Promise<void> } {
    const seen = new Map<string, number>(); // "local peer" -> first seen
    const cut = new Map<string, number>(); // client socket -> when cut
    const client = `${this.hostIp}:${SQUID_PORT}`;
    let stopped = false;
    const kill = (key: string) => {
      const [local, peer] = key.split(" ") as [string, string];
      return run("ss", ["-K", "-tnH", "state", "established", "src", local, "dst", peer]).catch(() => undefined);
    };
    const tick = async () => {
      // -e adds each socket's inode: a client port the kernel reuses at once for the next
      // connection is another connection, and must not inherit the cut of the last one.
      const { stdout } = await run("ss", ["-tnpeH", "state", "established"]).catch(() => ({ stdout: "" }));
      const now = Date.now();
      const current = new Set<string>();
      for (const line of stdout.split("\n")) {
        if (!line.includes(`pid=${pid},`)) continue;
        const [, , local, peer] = line.trim().split(/\s+/);
        const inode = /\bino:(\d+)/.exec(line)?.[1];
        if (!local || !peer || !inode) continue;
        const key = `${local} ${peer} ${inode}`;
        current.add(key);
        if (!seen.has(key)) seen.set(key, now);
      }
      for (const key of seen.keys()) if (!current.has(key)) seen.delete(key);
      for (const key of cut.keys()) if (!current.has(key)) cut.delete(key);
      const upstreams = [...seen].filter(([key]) => key.split(" ")[1]!.endsWith(":443"));
      for (const [key, since] of seen) {
        if (!key.startsWith(`${client} `)) continue;
        const done = cut.get(key);
        if (done !== undefined) {
          // A "close" that squid did not pass on within a second: reset the client side too.
          if (now - done > 1000) await kill(key);
          continue;
        }
        if (now - since < everyMs) continue;
        let mode: "close" | "reset" = how === "alternate" ? (this.cuts.length % 2 === 0 ? "close" : "reset") : how;
        // The upstream squid opened for this client: the one first seen closest after it.
        const upstream = upstreams
          .filter(([, at]) => at >= since - 200 && at <= since + 2000)
          .sort(([, a], [, b]) => Math.abs(a - since) - Math.abs(b - since))[0];
        if (mode === "close" && !upstream) mode = "reset";
        // Recorded before it is done: the client may see the reset, and the test read the cuts,
        // before `ss -K` has even exited.
        cut.set(key, now);
        this.cuts.push({ at: now, how: mode, client: key.split(" ")[1]! });
        await kill(mode === "close" ? upstream![0] : key);
        if (mode === "close") seen.delete(upstream![0]);
      }
    };
    const loop = (async () => {
      while (!stopped) {
        await tick();
        await sleep(100);
      }
    })();
    return {
      async stop() {
        stopped = true;
        await loop;
      },
    };
  }

  private async startMitm(): Promise<void> {
    const options = this.options.mitm ?? {};
    const confdir = join(this.dir, "mitmproxy");
    const args = [
      ...["--listen-host", this.hostIp, "--listen-port", String(MITM_PORT)],
      ...["--set", `confdir=${confdir}`],
      ...["--set", `ssl_verify_upstream_trusted_ca=${this.options.upstreamCaFile ?? testCa().cert}`],
    ];
    if (options.streamLargeBodies) args.push("--set", `stream_large_bodies=${options.streamLargeBodies}`);
    if (options.blockWebSockets) {
      const addon = join(this.dir, "block_websockets.py");
      writeFileSync(addon, BLOCK_WEBSOCKETS);
      args.push("-s", addon);
    }
    if (options.stripUpgrade) {
      const addon = join(this.dir, "strip_upgrade.py");
      writeFileSync(addon, STRIP_UPGRADE);
      args.push("-s", addon);
    }
    if (options.dropWebSockets) {
      const addon = join(this.dir, "drop_websockets.py");
      writeFileSync(addon, DROP_WEBSOCKETS);
      args.push("-s", addon);
    }
    this.proxy = new Child(`mitmdump:${this.ns}`, "mitmdump", args, { cwd: this.dir });
    await waitForListen(this.proxy, MITM_PORT, this.hostIp, 20_000);
    this.proxyCaFile = join(confdir, "mitmproxy-ca-cert.pem");
    if (!existsSync(this.proxyCaFile)) throw new Error(`mitmproxy made no CA in ${confdir}:\n${this.proxy.output}`);
    this.proxyUrl = `http://${this.hostIp}:${MITM_PORT}`;
  }
}

const REALM = "Burrow test corp proxy";

/** squid.conf's auth_param lines (and the password file) for `auth`. */
function squidAuth(auth: NonNullable<SquidOptions["auth"]>, file: (name: string) => string): string[] {
  const realm = `realm "${REALM}"`;
  switch (auth.scheme ?? "basic") {
    case "basic": {
      const hash = sh("openssl", ["passwd", "-apr1", "-stdin"], auth.password).trim();
      writeFileSync(file("passwd"), `${auth.user}:${hash}\n`);
      return [`auth_param basic program /usr/lib/squid/basic_ncsa_auth ${file("passwd")}`, `auth_param basic ${realm}`];
    }
    case "digest":
      // With -c, digest_file_auth reads "user:realm:HA1" lines: a password may contain ":"
      // (a plain "user:password" line would be read as user:realm:hash).
      writeFileSync(
        file("digest-passwd"),
        `${auth.user}:${REALM}:${createHash("md5").update(`${auth.user}:${REALM}:${auth.password}`).digest("hex")}\n`,
      );
      return [
        `auth_param digest program /usr/lib/squid/digest_file_auth -c ${file("digest-passwd")}`,
        `auth_param digest realm ${REALM}`, // squid quotes it itself
        "auth_param digest children 2",
      ];
    case "ntlm":
      return ["auth_param ntlm program /usr/lib/squid/ntlm_fake_auth", "auth_param ntlm children 2"];
  }
}

/** The unprivileged user squid runs as (it refuses to stay root). */
function squidUser(): string {
  try {
    sh("id", ["proxy"]);
    return "proxy";
  } catch {
    return "nobody";
  }
}

/** A mitmproxy addon: a policy that forbids WebSockets, as some inspecting proxies have. */
const BLOCK_WEBSOCKETS = `from mitmproxy import http


class BlockWebSockets:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if "websocket" in flow.request.headers.get("upgrade", "").lower():
            flow.response = http.Response.make(
                403, b"WebSockets are blocked by policy\\n", {"content-type": "text/plain"}
            )


addons = [BlockWebSockets()]
`;

/** A mitmproxy addon: hop-by-hop upgrade headers dropped, as by a proxy that knows only HTTP/1.1. */
const STRIP_UPGRADE = `from mitmproxy import http


class StripUpgrade:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.request.headers.pop("upgrade", None)
        flow.request.headers.pop("connection", None)


addons = [StripUpgrade()]
`;

/** A mitmproxy addon: WebSockets upgraded, then every message dropped. */
const DROP_WEBSOCKETS = `from mitmproxy import http


class DropWebSockets:
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        flow.websocket.messages[-1].drop()


addons = [DropWebSockets()]
`;

// ---------------------------------------------------------------------------------------------
// The origin, inside the namespace (the agent forwards to its own localhost)

/** The test origin (test/_origin.ts) as a process inside `network`, on its 127.0.0.1. */
export class CorpOrigin {
  private constructor(
    readonly child: Child,
    readonly port: number,
  ) {}

  static async start(network: CorpNetwork): Promise<CorpOrigin> {
    const child = network.exec([process.execPath, "--import", "./scripts/register-ts.js", "test/_origin-main.ts"], {
      label: `origin:${network.ns}`,
      env: { ...process.env, NODE_OPTIONS: undefined },
    });
    const match = await child.waitFor(/^origin listening on (\d+)$/, { timeoutMs: 20_000 });
    return new CorpOrigin(child, Number(match[1]));
  }

  async stop(): Promise<void> {
    await this.child.stop("SIGTERM");
  }
}

/** Environment variables that would otherwise leak the test's proxy or CA setup into an agent. */
export const NETWORK_ENV_VARS = [...PROXY_ENV_VARS, "NODE_EXTRA_CA_CERTS", "BURROW_TRANSPORT"];

/** An agent environment with exactly `env` of NETWORK_ENV_VARS set (the others removed). */
export function networkEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(NETWORK_ENV_VARS.map((name) => [name, undefined])), ...env };
}
