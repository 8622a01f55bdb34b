// PAC files for a corp network (test/_corp.ts): an HTTP server on the host side of the veth
// (port 80, as WPAD requires) that the namespace's firewall lets the agent reach, and the
// namespace's own /etc/hosts (`ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts),
// which names `wpad` and any other host the test needs, for glibc's, Bun's and Deno's resolvers
// alike: each reads /etc/hosts.

import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { join } from "node:path";
import type { CorpNetwork } from "./_corp.ts";

const NETNS_ETC = "/etc/netns";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

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
    if (pid && !alive(Number(pid))) rmSync(join(NETNS_ETC, entry), { recursive: true, force: true });
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
  static async start(network: CorpNetwork, options: { hosts: Record<string, string>; direct?: string[] }): Promise<PacRig> {
    sweepHosts();
    const dir = join(NETNS_ETC, network.ns);
    mkdirSync(dir, { recursive: true });
    const lines = ["127.0.0.1 localhost", "::1 localhost", ...Object.entries(options.hosts).map(([name, ip]) => `${ip} ${name}`)];
    writeFileSync(join(dir, "hosts"), `${lines.join("\n")}\n`);
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
