// The ways to a TCP service that the bench's TCP section measures (bench/_tcp.ts), by BENCH_ONLY
// id: straight to the service's port, an `ssh -L` forward through a real sshd (the reference a
// mature TCP tunnel gives), and Burrow's TCP tunnel through each relay once it exists.
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
  // ---------------------------------------------------------------------------------------------
  // Burrow's TCP tunnel, to be filled in with the feature: prepare() starts the relay (Relay.start
  // with launcher "workerd" or "selfhost-node", test/_relay.ts) and pushes its dispose; the path
  // for one service is `agent --tcp <servicePort>` (the machine behind the firewall) and
  // `agent connect <name> --listen 127.0.0.1:<free port>` (the visitor's side), its pids() both
  // agents' and the relay's. Goals against tcp-ssh: bench/_goals.ts's TCP_GOALS.
  {
    id: "tcp-workerd",
    name: "Burrow (workerd)",
    prepare: async () => "not implemented yet: Burrow's TCP tunnel (agent --tcp, agent connect --listen)",
  },
  {
    id: "tcp-selfhost-node",
    name: "Burrow (selfhost-node)",
    prepare: async () => "not implemented yet: Burrow's TCP tunnel (agent --tcp, agent connect --listen)",
  },
  // ---------------------------------------------------------------------------------------------
];

/** The TCP paths' ids, for BENCH_ONLY. */
export const TCP_IDS = TCP_PATHS.map((path) => path.id);
