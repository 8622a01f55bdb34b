import net from "node:net";

/**
 * A TCP proxy on 127.0.0.1 in front of `target`, as a corporate proxy or NAT between an agent
 * and its relay would be. `stall()` makes the connections it carries now stop forwarding both
 * ways without closing them (the silent drop of a NAT that forgot a mapping, or a hung proxy);
 * connections made after that flow again, as through a second route.
 */
export class StallingProxy {
  /** Connections opened so far. */
  connections = 0;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private readonly stalled = new Set<net.Socket>();

  private constructor(private readonly server: net.Server) {}

  static async start(target: number): Promise<StallingProxy> {
    const server = net.createServer();
    const proxy = new StallingProxy(server);
    server.on("connection", (client) => proxy.carry(client, target));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The connections open now stop forwarding, both ways, and stay open. Returns how many. */
  stall(): number {
    let stalled = 0;
    for (const pair of this.pairs) {
      for (const socket of pair) {
        if (this.stalled.has(socket)) continue;
        this.stalled.add(socket);
        // Neither end reads any more: what each sends stays in the kernel's buffers.
        socket.pause();
      }
      stalled++;
    }
    return stalled;
  }

  async close(): Promise<void> {
    for (const pair of this.pairs) for (const socket of pair) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private carry(client: net.Socket, target: number): void {
    this.connections++;
    const upstream = net.connect(target, "127.0.0.1");
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket) => {
      from.on("data", (chunk: Buffer) => {
        // A chunk read just before the stall is dropped, like the packets a dead route eats.
        if (this.stalled.has(from)) return;
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => this.stalled.has(from) || from.resume());
        }
      });
      from.on("end", () => this.stalled.has(from) || to.end());
    };
    forward(client, upstream);
    forward(upstream, client);
    const done = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of pair) {
      // Once stalled, one end going away is not passed on: the other end hears nothing, ever.
      socket.on("error", () => (this.stalled.has(socket) ? socket.destroy() : done()));
      socket.on("close", () => this.stalled.has(socket) || done());
    }
  }
}
