// A Kerberos realm for a corporate network of test/_corp.ts: its own KDC (krb5-kdc), database
// (kdb5_util, a random master password), a user and the proxy's service principal
// HTTP/proxy.<domain> (kadmin.local), the proxy's keytab, and a krb5.conf that needs no DNS:
//
//   host namespace                                  corp namespace
//   krb5kdc on 10.A.B.1:88 (TCP) ◀──────────────── kinit, the agent (KRB5_CONFIG, KRB5CCNAME)
//   squid on 10.A.B.1:3128, negotiate_kerberos_auth ◀── the agent, to http://proxy.<domain>:3128
//     with the keytab (it never calls the KDC)
//
// The namespace finds proxy.<domain> and kdc.<domain> in its own hosts file
// (/etc/netns/<ns>/hosts, which `ip netns exec` bind-mounts over /etc/hosts), and its firewall
// gets one more hole: TCP to the KDC.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Child, waitForListen } from "./_process.ts";

const KDC_PORT = 88;

/** What a realm and a Negotiate squid need (Debian: krb5-kdc, krb5-admin-server, krb5-user, squid, curl). */
const NEEDED = [
  "/usr/sbin/krb5kdc",
  "/usr/sbin/kdb5_util",
  "/usr/sbin/kadmin.local",
  "/usr/bin/kinit",
  "/usr/bin/curl",
  "/usr/lib/squid/negotiate_kerberos_auth",
  "/usr/lib/squid/negotiate_wrapper_auth",
  "/usr/lib/squid/ntlm_fake_auth",
];

/**
 * For describe.skipIf, beside skipCorp: true, after a loud warning, when the Kerberos tools are
 * missing; with BURROW_REQUIRE_CORP=1 (CI) it throws instead, so that nothing is skipped unnoticed.
 */
export function skipKerberos(what: string): boolean {
  const missing = NEEDED.filter((path) => !existsSync(path));
  const gssapi = (() => {
    try {
      return sh("ldconfig", ["-p"]).includes("libgssapi_krb5.so.2 ");
    } catch {
      return false;
    }
  })();
  if (!gssapi) missing.push("libgssapi_krb5.so.2");
  if (missing.length === 0) return false;
  const message = [
    "",
    `!!! SKIPPING ${what}: missing ${missing.join(", ")}`,
    "!!! They need krb5-kdc, krb5-admin-server, krb5-user, libgssapi-krb5-2, squid (with its helpers) and curl.",
    "",
  ].join("\n");
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
  return true;
}

/** Runs a command to completion with `env` added; throws with its stderr on failure. */
function sh(command: string, args: string[], env: NodeJS.ProcessEnv = {}, input?: string): string {
  return execFileSync(command, args, {
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
    input,
    env: { ...process.env, ...env },
  });
}

export interface RealmPlace {
  /** The network namespace whose machines use the realm. */
  ns: string;
  /** Where the KDC and the proxy listen, as the namespace reaches them. */
  hostIp: string;
  /** A directory of the network's for the realm's files (removed with the network). */
  dir: string;
}

/**
 * A realm BURROW.TEST for one corp network. The user `alice` has a password (`password`); the
 * proxy's key for HTTP/proxy.burrow.test@BURROW.TEST is in `keytab`.
 */
export class Realm {
  readonly realm = "BURROW.TEST";
  readonly domain = "burrow.test";
  readonly user = "alice";
  readonly password = randomBytes(12).toString("base64url");
  /** The proxy's host name, as users configure it: the service is HTTP@<this>. */
  readonly proxyHost = `proxy.${this.domain}`;
  private kdc: Child | undefined;

  private constructor(
    private readonly place: RealmPlace,
    readonly dir: string,
  ) {}

  /** The user's principal, user@REALM. */
  get principal(): string {
    return `${this.user}@${this.realm}`;
  }

  /** The krb5.conf of the realm (clients and the proxy's helper read it through KRB5_CONFIG). */
  get krb5Conf(): string {
    return join(this.dir, "krb5.conf");
  }

  /** The proxy's keytab: HTTP/proxy.<domain>@REALM. */
  get keytab(): string {
    return join(this.dir, "proxy.keytab");
  }

  /** A credential cache file of the test's, for KRB5CCNAME (FILE:...). Not created until kinit. */
  cache(name = "alice"): string {
    return `FILE:${join(this.dir, `ccache-${name}`)}`;
  }

  /**
   * Creates the realm's database and principals, starts its KDC on hostIp:88 (TCP), names the
   * proxy and the KDC in the namespace's hosts file, and opens its firewall to the KDC.
   * `owner` (squid's user) gets to read the proxy's keytab.
   */
  static async start(place: RealmPlace, owner: string): Promise<Realm> {
    const dir = join(place.dir, "krb5");
    mkdirSync(dir, { recursive: true });
    const realm = new Realm(place, dir);
    try {
      await realm.create(owner);
      return realm;
    } catch (error) {
      await realm.stop();
      throw error;
    }
  }

  private async create(owner: string): Promise<void> {
    const { realm, domain, dir } = this;
    const { hostIp, ns } = this.place;
    writeFileSync(
      this.krb5Conf,
      [
        "[libdefaults]",
        `  default_realm = ${realm}`,
        "  dns_lookup_kdc = false",
        "  dns_lookup_realm = false",
        // No DNS in the namespace: names stay as configured, never canonicalized or reversed.
        "  dns_canonicalize_hostname = false",
        "  rdns = false",
        // TCP only: the namespace's firewall opens TCP to the KDC, nothing else.
        "  udp_preference_limit = 1",
        "[realms]",
        `  ${realm} = {`,
        `    kdc = kdc.${domain}:${KDC_PORT}`,
        "  }",
        "[domain_realm]",
        `  .${domain} = ${realm}`,
        `  ${domain} = ${realm}`,
        "",
      ].join("\n"),
    );
    const kdcConf = join(dir, "kdc.conf");
    writeFileSync(
      kdcConf,
      [
        "[kdcdefaults]",
        `  kdc_listen = ${hostIp}:${KDC_PORT}`,
        `  kdc_tcp_listen = ${hostIp}:${KDC_PORT}`,
        "[realms]",
        `  ${realm} = {`,
        `    database_name = ${join(dir, "principal")}`,
        `    key_stash_file = ${join(dir, "stash")}`,
        `    acl_file = ${join(dir, "kadm5.acl")}`,
        `    kdc_listen = ${hostIp}:${KDC_PORT}`,
        `    kdc_tcp_listen = ${hostIp}:${KDC_PORT}`,
        "    max_life = 1h",
        "  }",
        "[logging]",
        `  kdc = FILE:${join(dir, "kdc.log")}`,
        `  admin_server = FILE:${join(dir, "kadmin.log")}`,
        `  default = FILE:${join(dir, "krb5.log")}`,
        "",
      ].join("\n"),
    );
    writeFileSync(join(dir, "kadm5.acl"), "");
    const env = this.adminEnv;
    // -s: a stash file, so that the KDC starts without asking; the master password is thrown away.
    sh("kdb5_util", ["create", "-s", "-r", realm, "-P", randomBytes(24).toString("base64url")], env);
    this.admin(`addprinc -pw ${this.password} ${this.principal}`);
    this.admin(`addprinc -randkey HTTP/${this.proxyHost}@${realm}`);
    this.admin(`ktadd -k ${this.keytab} HTTP/${this.proxyHost}@${realm}`);
    chownSync(this.keytab, Number(sh("id", ["-u", owner])), Number(sh("id", ["-g", owner])));
    // -n: in the foreground, stopped with the network.
    this.kdc = new Child(`krb5kdc:${ns}`, "krb5kdc", ["-n", "-r", realm], { cwd: dir, env: { ...process.env, ...env } });
    await waitForListen(this.kdc, KDC_PORT, hostIp, 20_000);
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(
      `/etc/netns/${ns}/hosts`,
      ["127.0.0.1 localhost", "::1 localhost", `${hostIp} ${this.proxyHost} kdc.${domain}`, ""].join("\n"),
    );
    sh("ip", [
      "netns",
      "exec",
      ns,
      "iptables",
      "-I",
      "OUTPUT",
      "1",
      "-p",
      "tcp",
      "-d",
      hostIp,
      "--dport",
      String(KDC_PORT),
      "-j",
      "ACCEPT",
    ]);
  }

  private get adminEnv(): Record<string, string> {
    return { KRB5_CONFIG: this.krb5Conf, KRB5_KDC_PROFILE: join(this.dir, "kdc.conf") };
  }

  private admin(query: string): string {
    return sh("kadmin.local", ["-r", this.realm, "-q", query], this.adminEnv);
  }

  /**
   * Gives the proxy's principal a new key the proxy's keytab does not have, as when a keytab
   * goes stale: tickets issued from now on are refused by the proxy.
   */
  rekeyProxy(): void {
    this.admin(`cpw -randkey HTTP/${this.proxyHost}@${this.realm}`);
  }

  /**
   * squid.conf lines that offer Negotiate, checked by negotiate_kerberos_auth against the
   * proxy's keytab; with `ntlm` (an NTLM helper's command line), negotiate_wrapper_auth passes
   * an NTLMSSP token inside Negotiate to that helper, as Windows proxies accept it.
   */
  squidConfig(ntlm?: string): string[] {
    // -s GSS_C_NO_NAME: any principal of the keytab; -t none: no replay cache on disk.
    const kerberos = `/usr/lib/squid/negotiate_kerberos_auth -s GSS_C_NO_NAME -k ${this.keytab} -t none`;
    const program = ntlm ? `/usr/lib/squid/negotiate_wrapper_auth --ntlm ${ntlm} --kerberos ${kerberos}` : kerberos;
    return [`auth_param negotiate program ${program}`, "auth_param negotiate children 5", "auth_param negotiate keep_alive on"];
  }

  /** squid's environment for its helper: the realm's krb5.conf and the proxy's keytab. */
  get squidEnv(): Record<string, string> {
    return { KRB5_CONFIG: this.krb5Conf, KRB5_KTNAME: `FILE:${this.keytab}`, KRB5RCACHETYPE: "none" };
  }

  /** The environment of a client of the realm: its krb5.conf and the credential cache `cache`. */
  clientEnv(cache = this.cache()): Record<string, string> {
    return { KRB5_CONFIG: this.krb5Conf, KRB5CCNAME: cache };
  }

  /**
   * kinit as the user into `cache`, inside the namespace (through the KDC, as a user would);
   * `lifetime` as kinit -l takes it ("1s", "10h").
   */
  kinit(cache = this.cache(), lifetime?: string): void {
    const args = [...(lifetime ? ["-l", lifetime] : []), this.principal];
    sh("ip", ["netns", "exec", this.place.ns, "kinit", ...args], this.clientEnv(cache), `${this.password}\n`);
  }

  /** Whether `cache` holds a ticket that has not expired (klist -s). */
  valid(cache = this.cache()): boolean {
    try {
      sh("klist", ["-s"], this.clientEnv(cache));
      return true;
    } catch {
      return false;
    }
  }

  async stop(): Promise<void> {
    await this.kdc?.stop("SIGKILL");
    rmSync(`/etc/netns/${this.place.ns}`, { recursive: true, force: true });
  }
}
