// The self-hosted relay's public TCP ports (`agent relay --tcp-ports A-B`, frp's remotePort):
// each TCP tunnel's agent gets one of the range while it is connected, the same one for its
// name across restarts while the name is kept (ports.json in --data; in memory without it). A
// port that another program took meanwhile moves the name to the next free one. node:net on
// every runtime: Node, Bun and Deno listen, refuse a port in use (EADDRINUSE) and free a
// closed one at once alike (probed on Node 20, Bun 1.4 and Deno 2.9); no per-runtime file.
import net from "node:net";
import type { PublicPort, PublicSocket } from "../core/host.ts";
import { unmapped } from "./_address.ts";
import { ObjectStorage } from "./_storage.ts";

export interface PortRange {
  first: number;
  last: number;
}

/** TCP keepalive on public connections: a client gone without a FIN stops holding a stream. */
const KEEPALIVE_MS = 60_000;

/**
 * The range's ports and which name holds each. `accept` gets every connection, paused, with
 * the name of the tunnel whose port it came to and its peer's address.
 */
export class PortPool {
  /** Never handed out: the relay's own port, once it listens. */
  relayPort = 0;
  private readonly listening = new Map<string, { port: number; server: net.Server }>();
  private readonly sockets = new Set<net.Socket>();
  /** Ports are handed out one at a time: two tunnels admitted at once never get the same. */
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private readonly held: ObjectStorage;

  constructor(
    readonly range: PortRange,
    private readonly host: string,
    /** ports.json in the data directory; undefined: in memory. */
    file: string | undefined,
    private readonly accept: (name: string, socket: PublicSocket, from: string) => void,
  ) {
    this.held = new ObjectStorage(file, () => {});
  }

  /** "20000-20099", as the flag said it. */
  get label(): string {
    const { first, last } = this.range;
    return first === last ? String(first) : `${first}-${last}`;
  }

  /** Tunnel `name`'s port, as its core sees it. */
  forTunnel(name: string): PublicPort {
    return {
      open: () => {
        const opened = this.queue.then(() => this.open(name));
        this.queue = opened.catch(() => undefined);
        return opened;
      },
      close: () => this.close(name, "its agent left"),
      release: () => {
        this.close(name, "its name lapsed");
        void this.held.delete(name);
      },
    };
  }

  /** Stops listening everywhere and drops the connections (the relay stops). */
  stop(): void {
    this.stopped = true;
    for (const name of [...this.listening.keys()]) this.close(name);
    for (const socket of this.sockets) socket.destroy();
  }

  private async open(name: string): Promise<{ port: number } | { problem: string }> {
    const open = this.listening.get(name);
    if (open) return { port: open.port };
    if (this.stopped) return { problem: "the relay is stopping" };
    const kept = await this.held.get<number>(name);
    const others = new Set(this.held.entries().flatMap(([key, port]) => (key === name ? [] : [port as number])));
    const candidates: number[] = [];
    if (kept !== undefined && kept >= this.range.first && kept <= this.range.last) candidates.push(kept);
    for (let port = this.range.first; port <= this.range.last; port++) {
      if (port !== kept && !others.has(port)) candidates.push(port);
    }
    let failure = "";
    for (const port of candidates) {
      if (port === this.relayPort) continue;
      const server = await this.listen(name, port).catch((error: NodeJS.ErrnoException) => {
        // In use by another program: the next one. Anything else (EACCES below 1024) is said.
        if (error.code !== "EADDRINUSE") failure = `; ${port}: ${error.message}`;
        return undefined;
      });
      if (!server) continue;
      if (this.stopped) {
        server.close();
        return { problem: "the relay is stopping" };
      }
      this.listening.set(name, { port, server });
      if (port !== kept) await this.held.put(name, port);
      const moved = kept !== undefined && port !== kept ? ` (its port ${kept} is in use by another program)` : "";
      console.log(`relay | tunnel ${name}: public TCP port ${port}${moved}`);
      return { port };
    }
    const held = others.size > 0 ? `, ${others.size} held by other tunnels' names` : "";
    const problem = `no port of the relay's --tcp-ports ${this.label} is free (${candidates.length} tried${held}${failure})`;
    console.warn(`relay | tunnel ${name}: ${problem}`);
    return { problem };
  }

  private close(name: string, why?: string): void {
    const open = this.listening.get(name);
    if (!open) return;
    this.listening.delete(name);
    open.server.close();
    if (why) console.log(`relay | tunnel ${name}: public TCP port ${open.port} closed (${why})`);
  }

  /** Listens on `port` for tunnel `name`. @throws {Error} node:net's (EADDRINUSE, EACCES). */
  private listen(name: string, port: number): Promise<net.Server> {
    // allowHalfOpen: a client's EOF ends its direction only (End), as the agent's side does.
    // pauseOnConnect: nothing is read before the core has judged the connection.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
      // A socket turned away is destroyed; its late errors are nobody's concern (the pipe has its own listener).
      socket.on("error", () => {});
      socket.setNoDelay(true);
      socket.setKeepAlive(true, KEEPALIVE_MS);
      this.accept(name, socket, unmapped(socket.remoteAddress) ?? "");
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host: this.host }, () => {
        server.off("error", reject);
        server.on("error", (error) => console.error(`relay | tunnel ${name}: public TCP port ${port} failed`, error));
        resolve(server);
      });
    });
  }
}
