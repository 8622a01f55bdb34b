import { attachSocket } from "@burrow/protocol";
import { parseIp, visitorKey } from "./cidr.ts";
import { EdgeError } from "./errors.ts";
import type { PublicSocket } from "./host.ts";
import type { TunnelCore } from "./tunnel.ts";
import type { ReadyAttachment } from "./tunnel-state.ts";
import { takeStream, visitorRules } from "./tunnel-visit.ts";

// A self-hosted relay's public TCP ports (`agent relay --tcp-ports`, frp's remotePort): the
// agent of a TCP tunnel gets one when it is admitted, the same one for its name while the name
// is kept, and plain clients (ssh -p, psql -p) connect there with no `agent connect` and no key:
// the tunnel's --allow-ip alone decides who gets in. Each connection ends at the relay in a
// TcpPipe (TcpRoutes.openPiped) whose stream the agent opens to its target as a connect's.
// The host listens (see PublicPort); Cloudflare has no ports, and nothing here runs there.

/** A tunnel's public connections turned away by a limit are logged at most this often. */
const LIMIT_LOG_MS = 10_000;
const limitLogged = new WeakMap<TunnelCore, number>();

/** The Ready of a TCP tunnel's agent: where plain clients reach it, or why they cannot. */
export interface PortAnswer {
  url: string;
  notice: string;
}

/**
 * Opens the tunnel's public port for its TCP agent, if the host has ports. `url` is the
 * tunnel's public URL (see publicHost).
 * @returns the Ready's url (`tcp://HOST:PORT`) and notice (why there is no port).
 */
export async function openPort(t: TunnelCore, url: string): Promise<PortAnswer> {
  const port = t.host.publicPort;
  if (!port) {
    return {
      url,
      notice:
        "this relay gives no public TCP ports (a self-hosted relay's --tcp-ports does): visitors reach this tunnel with `agent connect`",
    };
  }
  const opened = await port.open();
  if ("problem" in opened) {
    return { url, notice: `${opened.problem}: visitors reach this tunnel with \`agent connect\` only` };
  }
  return { url: `tcp://${publicHost(t, url)}:${opened.port}`, notice: "" };
}

/** The tunnel's TCP agent is gone for good, or it serves HTTP now: its port stops listening (the name keeps it). */
export function closePort(t: TunnelCore): void {
  t.host.publicPort?.close();
}

/** The tunnel's name lapsed or is free again: its port may go to another name. */
export function releasePort(t: TunnelCore): void {
  t.host.publicPort?.release();
}

/**
 * A connection to the tunnel's public port, from `from` (the TCP peer: no proxy states
 * anything here). Closed unless the tunnel is a TCP tunnel whose agent is here or on its way
 * back, its --allow-ip admits `from`, and a stream is free within MAX_STREAMS_PER_TUNNEL and
 * the address's share (MAX_STREAMS_PER_VISITOR: anyone may come here, unlike a keyed connect);
 * then its bytes are a stream to the agent, who connects its target. Nothing reaches the agent
 * for a connection turned away.
 */
export async function acceptTcp(t: TunnelCore, socket: PublicSocket, from: string): Promise<void> {
  // Set by the agent's hello, which comes before the port opens; read from storage otherwise.
  const rules = t.rules !== undefined ? t.rules : await visitorRules(t);
  const agent = t.agent() ?? t.current;
  if (!agent?.tcp || (rules && !rules.admitsAddress(from ? parseIp(from) : undefined))) {
    socket.destroy();
    return;
  }
  try {
    takeStream(t, visitorKey(from));
  } catch (error) {
    socket.destroy();
    if (!(error instanceof EdgeError)) throw error;
    // Said in the relay's log, at most once in LIMIT_LOG_MS per tunnel: a client that opens
    // connections in a loop must not flood it.
    const now = Date.now();
    if (now - (limitLogged.get(t) ?? 0) >= LIMIT_LOG_MS) {
      limitLogged.set(t, now);
      const link = t.current?.link;
      const name = link ? (t.attachment(link) as ReadyAttachment).name : "";
      console.warn(`tunnel ${name}: a connection to its public TCP port from ${from} closed: ${error.message}`);
    }
    return;
  }
  const pipe = t.tcp.openPiped(from, socket);
  if (!pipe) {
    socket.destroy();
    return;
  }
  attachSocket(socket, pipe);
  socket.resume();
}

/**
 * Where the port is: the host of the tunnel's public URL (--public-url's, or the one the agent
 * reached the relay by), or for a tunnel at <name>.DOMAIN the relay's own DOMAIN.
 */
function publicHost(t: TunnelCore, url: string): string {
  let hostname: string;
  try {
    hostname = new URL(url).hostname;
  } catch {
    return "localhost";
  }
  const base = t.settings.baseDomain;
  if (base && hostname.endsWith(`.${base}`)) return base;
  return hostname || "localhost";
}
