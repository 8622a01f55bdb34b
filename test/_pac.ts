// PAC files for a corp network (test/_corp.ts): an HTTP server on the host side of the veth
// (port 80, as WPAD requires) that the namespace's firewall lets the agent reach; the
// namespace's own /etc/hosts (`ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts),
// which names the hosts a test needs; and optionally a DNS server of its own (dnsmasq on the
// namespace's 127.0.0.1:53) with a search domain in its /etc/resolv.conf, so that `wpad` is
// found as wpad.<domain>, the way WPAD works in a Windows domain. Node (glibc's getaddrinfo),
// Bun and Deno each resolve both ways from inside a namespace (checked by hand and by these
// tests: the agent's own lookup finds the PAC).

import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import type { CorpNetwork } from "./_corp.ts";
import { processAlive } from "./_process.ts";

const NETNS_ETC = "/etc/netns";

/** Removes /etc/netns/burrow-<pid>-<n> left by test processes that died. */
function sweepHosts(): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(NETNS_ETC);
  } catch {
    return;
  }
  for (const entry of entries) {
    const pid = /^burrow-(\d+)-\d+$/.exec(entry)?.[1];
    if (pid && !processAlive(Number(pid))) rmSync(join(NETNS_ETC, entry), { recursive: true, force: true });
  }
}

export class PacRig {
  /** Requests the server answered, by path: what WPAD and the agents fetched. */
  readonly fetched: string[] = [];
  private readonly files = new Map<string, string>();

  private constructor(
    private readonly network: CorpNetwork,
    private readonly server: http.Server,
  ) {}

  /**
   * Serves PAC files at http://<hostIp>/ to the namespace, and gives it a hosts file naming
   * `hosts` (name -> address). `direct` lists addresses the namespace may also reach on 443
   * without the proxy (for a PAC's DIRECT).
   */
  static async start(
    network: CorpNetwork,
    options: {
      hosts: Record<string, string>;
      direct?: string[];
      /** A DNS server in the namespace answering `names` (full names), and `search` in resolv.conf. */
      dns?: { search: string; names: Record<string, string> };
    },
  ): Promise<PacRig> {
    sweepHosts();
    const dir = join(NETNS_ETC, network.ns);
    mkdirSync(dir, { recursive: true });
    const lines = ["127.0.0.1 localhost", "::1 localhost", ...Object.entries(options.hosts).map(([name, ip]) => `${ip} ${name}`)];
    writeFileSync(join(dir, "hosts"), `${lines.join("\n")}\n`);
    if (options.dns) {
      writeFileSync(
        join(dir, "resolv.conf"),
        `nameserver 127.0.0.1\nsearch ${options.dns.search}\noptions timeout:1 attempts:1\n`,
      );
      const dnsmasq = network.exec(
        [
          ...["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--log-queries"],
          ...["--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--user=root"],
          ...Object.entries(options.dns.names).map(([name, ip]) => `--host-record=${name},${ip}`),
        ],
        { label: `dnsmasq:${network.ns}` },
      );
      await dnsmasq.waitFor(/started, version/, { timeoutMs: 10_000 }).catch((error: Error) => {
        throw new Error(
          `dnsmasq did not start in ${network.ns} (is dnsmasq-base installed?): ${error.message}\n${dnsmasq.output}`,
        );
      });
    }
    const server = http.createServer();
    const rig = new PacRig(network, server);
    server.on("request", (request, response) => {
      rig.fetched.push(request.url ?? "");
      const text = rig.files.get(request.url ?? "");
      if (text === undefined) response.writeHead(404).end("not found\n");
      else response.writeHead(200, { "content-type": "application/x-ns-proxy-autoconfig" }).end(text);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(80, network.hostIp, resolve);
    });
    const allow = (rule: string) =>
      execFileSync("ip", ["netns", "exec", network.ns, "iptables", "-I", "OUTPUT", "1", ...rule.split(" ")]);
    allow(`-p tcp -d ${network.hostIp} --dport 80 -j ACCEPT`);
    for (const ip of options.direct ?? []) allow(`-p tcp -d ${ip} --dport 443 -j ACCEPT`);
    return rig;
  }

  /** Serves `text` at `path`; returns its URL. */
  serve(path: string, text: string): string {
    this.files.set(path, text);
    return `http://${this.network.hostIp}${path}`;
  }

  async dispose(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
    rmSync(join(NETNS_ETC, this.network.ns), { recursive: true, force: true });
  }
}
