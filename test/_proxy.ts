import http from "node:http";
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

/**
 * An HTTP proxy on 127.0.0.1 that answers CONNECT, as a corporate proxy does, and reads the
 * plain-HTTP requests that pass through its tunnels (a relay on http:, as in the tests): the
 * exchanges an agent's HTTPS transport costs, seen from outside the agent and the relay.
 */
export class CountingProxy {
  /** Each request line sent through the tunnels, in order: "POST /_burrow/session?...". */
  readonly requests: string[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<CountingProxy> {
    const server = http.createServer((_, response) => response.writeHead(405).end());
    const proxy = new CountingProxy(server);
    server.on("connect", (request: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      const [host, port] = (request.url ?? "").split(/:(?=\d+$)/);
      const upstream = net.connect(Number(port), host === "localhost" ? "127.0.0.1" : host);
      for (const socket of [client, upstream]) {
        proxy.sockets.add(socket);
        socket.on("close", () => proxy.sockets.delete(socket));
        socket.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      upstream.once("connect", () => {
        client.write("HTTP/1.1 200 Connection established\r\n\r\n");
        if (head.byteLength > 0) proxy.read(head, upstream);
        client.on("data", (chunk: Buffer) => proxy.read(chunk, upstream));
        upstream.pipe(client);
        client.on("end", () => upstream.end());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private read(chunk: Buffer, upstream: net.Socket): void {
    // The agent writes each request's head in one write, at the start of a segment; bodies are
    // frames, which never hold a request line.
    for (const match of chunk.toString("latin1").matchAll(/((?:GET|POST|DELETE) \/_burrow\/session\S*) HTTP\/1\.1\r\n/g)) {
      this.requests.push(match[1]!);
    }
    upstream.write(chunk);
  }
}
