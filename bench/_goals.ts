// Goals judged on the medians of one run. Issue 22's, for the self-hosted relay: at c=50 at least
// 2x the best peer's requests/s and at least 0.3 of one nginx hop's; at c=1 no more latency over
// direct than localtunnel adds; downloads at least 0.7 of nginx's stream. The TCP tunnel's:
// against `ssh -L` over loopback (TCP_GOALS).

/** The medians of one variant that the goals read. */
export interface Medians {
  name: string;
  c1p50: number;
  c50rps: number;
  downMBps: number;
}

export interface Check {
  text: string;
  value: number;
  /** null: a reference is missing from this run. */
  met: boolean | null;
}

const fixed = (n: number, digits: number) => (Number.isNaN(n) ? "-" : n.toFixed(digits));

function check(value: number, met: boolean, text = fixed(value, 2)): Check {
  if (Number.isNaN(value)) return { text: "-", value, met: null };
  return { text: `${text} ${met ? "met" : "MISSED"}`, value, met };
}

/**
 * The checks for each self-hosted variant against the references of the same run.
 * @returns a row per variant: its checks and how many were met of those that could be judged.
 */
export function selfhostGoals(
  variants: Medians[],
  refs: { direct?: Medians; nginx?: Medians; peers: Medians[] },
): { variant: string; checks: Record<string, Check>; met: string }[] {
  const nan = Number.NaN;
  const lt = refs.peers.find((p) => p.name === "localtunnel");
  const bestPeer = refs.peers.length > 0 ? Math.max(...refs.peers.map((p) => p.c50rps).filter((n) => !Number.isNaN(n))) : nan;
  const ltAdded = lt && refs.direct ? lt.c1p50 - refs.direct.c1p50 : nan;
  return variants.map((r) => {
    const added = refs.direct ? r.c1p50 - refs.direct.c1p50 : nan;
    const nginx = refs.nginx;
    const checks = {
      "c50/best peer >=2": check(r.c50rps / bestPeer, r.c50rps >= 2 * bestPeer),
      "c50/nginx >=0.3": check(nginx ? r.c50rps / nginx.c50rps : nan, !!nginx && r.c50rps >= 0.3 * nginx.c50rps),
      "c1 ms over direct <= lt's": check(
        Number.isNaN(ltAdded) ? nan : added,
        added <= ltAdded,
        `+${fixed(added, 2)} (lt +${fixed(ltAdded, 2)})`,
      ),
      "down/nginx >=0.7": check(nginx ? r.downMBps / nginx.downMBps : nan, !!nginx && r.downMBps >= 0.7 * nginx.downMBps),
    };
    const judged = Object.values(checks).filter((c) => c.met !== null);
    return { variant: r.name, checks, met: `${judged.filter((c) => c.met).length}/${judged.length}` };
  });
}

/**
 * The TCP tunnel's goals, as a share of what `ssh -L` through a local sshd gives on each figure
 * (redis GET and SET ops/s at 50 clients, MB/s each way): through the Cloudflare relay (workerd)
 * at least half, through the self-hosted relay at least as much.
 */
export const TCP_GOALS: Record<string, number> = { "tcp-workerd": 0.5, "tcp-selfhost-node": 1.0 };

/** The medians of one TCP path that the goals read. */
export interface TcpMedians {
  id: string;
  name: string;
  getOps: number;
  setOps: number;
  downMBps: number;
  upMBps: number;
}

/**
 * The checks for each path that has a goal in TCP_GOALS, against `ssh` (tcp-ssh) of the same run.
 * @returns a row per such path: its goal, its checks and how many were met of those judged.
 */
export function tcpGoals(
  paths: TcpMedians[],
  ssh: TcpMedians | undefined,
): { path: string; goal: string; checks: Record<string, Check>; met: string }[] {
  return paths
    .filter((p) => p.id in TCP_GOALS)
    .map((p) => {
      const goal = TCP_GOALS[p.id]!;
      const against = (pick: (m: TcpMedians) => number) => {
        const ratio = ssh ? pick(p) / pick(ssh) : Number.NaN;
        return check(ratio, ratio >= goal);
      };
      const checks = {
        "GET/ssh": against((m) => m.getOps),
        "SET/ssh": against((m) => m.setOps),
        "down/ssh": against((m) => m.downMBps),
        "up/ssh": against((m) => m.upMBps),
      };
      const judged = Object.values(checks).filter((c) => c.met !== null);
      return {
        path: p.name,
        goal: `>=${goal.toFixed(1)}x ssh -L`,
        checks,
        met: `${judged.filter((c) => c.met).length}/${judged.length}`,
      };
    });
}
