// The ways to a TCP service that the bench's TCP section measures (bench/_tcp.ts), by BENCH_ONLY
// id: straight to the service's port, an `ssh -L` forward through a real sshd (the reference a
// mature TCP tunnel gives), and Burrow's TCP tunnel through each relay.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AgentProcess } from "../test/_agent.ts";
import { freePort } from "../test/_process.ts";
import { Relay, type RelayLauncher } from "../test/_relay.ts";
import { findProgram, sshForward, startSshd } from "../test/_services.ts";

/** A local port that leads to one service. */
export interface TcpPath {
  /** Where clients connect, on 127.0.0.1. */
  port: number;
  stop(): Promise<void>;
  /** The path's own processes (a tunnel's client and server), whose memory is reported. */
  pids?(): number[];
}

/** Opens a path to 127.0.0.1:`servicePort`. */
export type OpenTcpPath = (servicePort: number) => Promise<TcpPath>;

export interface TcpPathPlan {
  id: string;
  name: string;
  /**
   * Starts what the path's services share (an sshd; a relay), pushing how to stop it onto
   * `stops`, and returns how to open the path to one service; or why it cannot run here.
   */
  prepare(stops: (() => Promise<unknown>)[]): Promise<OpenTcpPath | string>;
}

export const TCP_PATHS: TcpPathPlan[] = [
  {
    id: "tcp-direct",
    name: "direct",
    prepare: async () => async (port) => ({ port, stop: async () => {} }),
  },
  {
    id: "tcp-ssh",
    name: "ssh -L",
    async prepare(stops) {
      const missing = ["sshd", "ssh", "ssh-keygen"].filter((name) => !findProgram(name));
      if (missing.length > 0) return `${missing.join(", ")} not installed (apt-get install openssh-server openssh-client)`;
      const sshd = await startSshd();
      stops.push(sshd.stop);
      return (port) => sshForward(sshd, port);
    },
  },
  // Burrow's TCP tunnel: one relay per path, and for each service an agent on Node serving it
  // (`agent --tcp`, the machine behind the firewall) and `agent connect --listen` on Node (the
  // visitor's side). Goals against tcp-ssh: bench/_goals.ts's TCP_GOALS.
  burrowPath("tcp-workerd", "Burrow (workerd)", "workerd"),
  burrowPath("tcp-selfhost-node", "Burrow (selfhost-node)", "selfhost-node"),
];

/** The TCP paths' ids, for BENCH_ONLY. */
export const TCP_IDS = TCP_PATHS.map((path) => path.id);

/**
 * Burrow's TCP tunnel through a relay of `launcher`: the relay is shared by the path's services,
 * each of which gets its own tunnel (an agent and a connect); the path's processes are both
 * agents and the relay.
 */
function burrowPath(id: string, name: string, launcher: RelayLauncher): TcpPathPlan {
  return {
    id,
    name,
    async prepare(stops) {
      const relay = await Relay.start({ launcher });
      stops.push(() => relay.dispose());
      const dir = mkdtempSync(join(tmpdir(), "burrow-bench-tcp-"));
      stops.push(async () => rmSync(dir, { recursive: true, force: true }));
      return async (servicePort) => {
        const tunnel = `bench-${id}-${servicePort}`;
        const keyFile = join(dir, tunnel);
        writeFileSync(keyFile, `${tunnel}-key-of-the-bench\n`, { mode: 0o600 });
        const agent = new AgentProcess("node", [
          ...["--tcp", String(servicePort), "--connect-key-file", keyFile],
          ...["--relay", relay.url, "--name", tunnel],
        ]);
        const port = await freePort();
        let client: AgentProcess | undefined;
        try {
          await agent.ready();
          client = new AgentProcess("node", [
            ...["connect", tunnel, "--listen", `127.0.0.1:${port}`, "--key-file", keyFile],
            ...["--relay", relay.url],
          ]);
          await client.waitFor(/^connected to tunnel \S+: connect to /);
        } catch (error) {
          await client?.stop("SIGKILL");
          await agent.stop("SIGKILL");
          throw error;
        }
        const visitor = client;
        return {
          port,
          pids: () => [agent.runtimePid, visitor.runtimePid, ...relay.processes()],
          async stop() {
            await visitor.stop("SIGINT");
            await agent.stop("SIGINT");
          },
        };
      };
    },
  };
}
