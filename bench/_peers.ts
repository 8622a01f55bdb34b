// The peer tunnels, localtunnel and tunnelmole, on loopback beside Burrow, from the peers folder
// (`../shared/peers` beside the clone, or $BURROW_PEERS): its build.sh builds their pinned trees
// under $PEERS_ROOT (default /tmp/peers), its start.sh starts each one's server and client. A bash
// script sources start.sh, prints what it started and waits on its stdin: when this process ends
// (normally, on Ctrl-C or killed) the pipe closes and the script stops the peers' process groups;
// stop() does so too, and signals the groups itself in case the script is gone.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../test/_relay.ts";
import type { Target } from "./_measure.ts";

export type PeerName = "localtunnel" | "tunnelmole";

export interface Peer {
  name: PeerName;
  target: Target;
  /** The client process (the peer's agent) and the server process (its relay). */
  clientPid: number;
  serverPid: number;
}

export interface Peers {
  peers: Peer[];
  /** Why a peer, or all of them, is missing; printed under the tables and kept in the JSON. */
  notes: string[];
  stop(): Promise<void>;
}

/** Where the peers folder is, whether its trees are built (building them if not), then starts both. */
export async function startPeers(originPort: number): Promise<Peers> {
  const dir = process.env.BURROW_PEERS ?? join(ROOT, "../shared/peers");
  const none = (note: string): Peers => ({ peers: [], notes: [note], stop: async () => {} });
  if (!existsSync(join(dir, "start.sh")) || !existsSync(join(dir, "build.sh"))) {
    return none(
      `peers skipped: no start.sh and build.sh in ${dir} (the localtunnel and tunnelmole tools); put that folder at ../shared/peers beside the clone, or point BURROW_PEERS at it`,
    );
  }
  const root = process.env.PEERS_ROOT ?? "/tmp/peers";
  const built = [
    "lt-server/bin/server",
    "lt-server/node_modules/esm/esm.js",
    "lt-client/node_modules/localtunnel/bin/lt.js",
    "tm-service/dist/srv/index.js",
    "tm-client/node_modules/tunnelmole/dist/bin/tunnelmole.js",
  ];
  if (!built.every((file) => existsSync(join(root, file)))) {
    console.log(`peers: the trees under ${root} are missing, building them: bash ${join(dir, "build.sh")} (about 25 s)`);
    try {
      execFileSync("bash", [join(dir, "build.sh")], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, PEERS_ROOT: root },
      });
    } catch (error) {
      const output = `${(error as { stdout?: Buffer }).stdout ?? ""}${(error as { stderr?: Buffer }).stderr ?? ""}`;
      return none(`peers skipped: bash ${join(dir, "build.sh")} failed: ${output.trim().split("\n").slice(-3).join(" / ")}`);
    }
  }

  const work = mkdtempSync(join(tmpdir(), "burrow-peers-"));
  const child = spawn("bash", [join(ROOT, "bench/_peers.sh"), work, String(originPort)], {
    detached: true,
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, PEERS_ROOT: root, PEERS_TOOLS_DIR: dir },
  });
  const groups = new Set<number>();
  const peers: Peer[] = [];
  const notes: string[] = [];
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve) => {
    let partial = "";
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop()!;
      for (const line of lines) {
        const [word, ...rest] = line.split(" ");
        if (word === "pids") for (const pid of rest) groups.add(Number(pid));
        else if (word === "peer") {
          const [name, base, host, serverPid, clientPid] = rest as [PeerName, string, string, string, string];
          peers.push({ name, target: { base, host }, serverPid: Number(serverPid), clientPid: Number(clientPid) });
        } else if (word === "failed") {
          const why = stderr.trim().split("\n").at(-1) ?? "";
          notes.push(`${rest[0]} skipped: it did not start (${why}; logs in ${work})`);
        } else if (word === "ready") resolve();
      }
    });
    void exited.then(() => resolve());
  });
  if (child.exitCode !== null) notes.push(`peers: the start script exited (${stderr.trim().split("\n").at(-1)})`);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    child.stdin!.end();
    child.kill("SIGTERM"); // the script's trap stops the peers, at once if it is still starting them
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
    for (const pid of groups) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // gone, as it should be
      }
    }
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // gone
    }
    if (notes.length === 0) rmSync(work, { recursive: true, force: true }); // kept for a failed peer's logs
  };
  return { peers, notes, stop };
}
