import http from "node:http";
import type { AddressInfo } from "node:net";
import {
  CONNECT_PATH,
  decodeFrames,
  encodeFrame,
  type Frame,
  FrameType,
  HEARTBEAT,
  type HelloFrame,
  INFO_PATH,
} from "@burrow/protocol";
import { type WebSocket, WebSocketServer } from "ws";

/**
 * A stand-in relay that speaks frames as a script says, for agent behaviour the real relay
 * cannot be made to show (refusal codes, close codes, frames that break the protocol): a `ws`
 * server on 127.0.0.1, as RawAgent in test/edge/relay.test.ts is a stand-in agent.
 */
export class ScriptedRelay {
  readonly connections: RelayConnection[] = [];
  private readonly waiters = new Set<() => void>();

  private constructor(
    private readonly server: http.Server,
    sockets: WebSocketServer,
    /** Called with each connection once its Hello arrived. */
    private readonly onHello: (connection: RelayConnection, index: number) => void,
  ) {
    sockets.on("connection", (socket, request) => {
      if (!request.url?.startsWith(CONNECT_PATH)) return socket.close(1008, "not the connect path");
      const connection = new RelayConnection(socket, () => this.notify());
      this.connections.push(connection);
      const index = this.connections.length - 1;
      void connection.hello.then(() => this.onHello(connection, index));
      this.notify();
    });
  }

  /**
   * Answers each Hello with `onHello` (by default: Ready, tunnel `name` on an open relay), and
   * `GET INFO_PATH` with `info` (by default none: 426, as a bare WebSocket server answers).
   */
  static async start(
    onHello: (connection: RelayConnection, index: number) => void = (c) => c.ready(),
    info?: object,
  ): Promise<ScriptedRelay> {
    const sockets = new WebSocketServer({ noServer: true });
    const server = http.createServer((request, response) => {
      if (info && request.method === "GET" && request.url === INFO_PATH) {
        response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(info));
      } else response.writeHead(426, { "content-type": "text/plain" }).end("Upgrade Required"); // as ws's own server
    });
    server.on("upgrade", (request, socket, head) =>
      sockets.handleUpgrade(request, socket, head, (ws) => sockets.emit("connection", ws, request)),
    );
    server.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    return new ScriptedRelay(server, sockets, onHello);
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves with connection `index` (0 is the first) once the agent opened it. */
  async connection(index: number, timeoutMs = 20_000): Promise<RelayConnection> {
    await waitUntil(this.waiters, () => this.connections.length > index, timeoutMs, `connection ${index}`);
    return this.connections[index]!;
  }

  async close(): Promise<void> {
    for (const connection of this.connections) connection.socket.terminate();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/** One agent connection: every frame it sent, in order. */
export class RelayConnection {
  readonly frames: Frame[] = [];
  /** Why a message from the agent could not be decoded, if one could not. */
  readonly errors: Error[] = [];
  readonly hello: Promise<HelloFrame>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly socket: WebSocket,
    changed: () => void,
  ) {
    socket.on("message", (data: Buffer, binary: boolean) => {
      if (!binary) {
        if (data.toString() === HEARTBEAT.ping) socket.send(HEARTBEAT.pong);
        return;
      }
      try {
        this.frames.push(...decodeFrames(new Uint8Array(data)));
      } catch (error) {
        // The agent broke the protocol: tests check `errors` is empty.
        this.errors.push(error as Error);
      }
      this.notify();
    });
    this.hello = this.next((frame): frame is HelloFrame => frame.type === FrameType.Hello);
    this.closed = new Promise((resolve) =>
      socket.on("close", (code, reason) => {
        resolve({ code, reason: reason.toString() });
        this.notify();
        changed();
      }),
    );
  }

  /** Says the tunnel is up, as the hello asked. */
  async ready(open = true): Promise<void> {
    const hello = await this.hello;
    this.send({
      type: FrameType.Ready,
      name: hello.name,
      url: `http://${hello.name}.localhost:9`,
      open,
      session: "scripted-session",
      resumed: false,
      received: 0,
    });
  }

  /** Refuses the hello and closes, as the relay does. */
  refuse(code: string, message: string): void {
    this.send({ type: FrameType.Refused, code: code as never, message });
    this.socket.close(4000, code);
  }

  /** Sends frames as one message (the relay batches a turn's frames). */
  send(...frames: Frame[]): void {
    this.sendBytes(Buffer.concat(frames.map((frame) => encodeFrame(frame))));
  }

  sendBytes(bytes: Uint8Array): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(bytes);
  }

  /** Resolves with the first frame since the start that `match` accepts (and was not taken). */
  async next<T extends Frame>(match: (frame: Frame) => frame is T, timeoutMs?: number): Promise<T>;
  async next(match: (frame: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  async next(match: (frame: Frame) => boolean, timeoutMs = 20_000): Promise<Frame> {
    let found: Frame | undefined;
    await waitUntil(
      this.waiters,
      () => {
        found = this.frames.find(match);
        return found !== undefined;
      },
      timeoutMs,
      "a matching frame",
    );
    return found!;
  }

  /** Resolves once `done()` is true, re-checked on every frame (and the close). */
  async until(done: () => boolean, timeoutMs = 20_000, what = "the condition"): Promise<void> {
    await waitUntil(this.waiters, done, timeoutMs, what);
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

async function waitUntil(waiters: Set<() => void>, done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no ${what} within ${timeoutMs}ms`);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(finish, left);
      function finish() {
        clearTimeout(timer);
        waiters.delete(finish);
        resolve();
      }
      waiters.add(finish);
    });
  }
}
