import {
  CONNECT_PATH,
  decodeFrames,
  encodeFrame,
  type Frame,
  FrameType,
  type HelloFrame,
  PROTOCOL_VERSION,
} from "@burrow/protocol";
import WebSocket from "ws";
import type { Relay } from "./_relay.ts";

export const NO_RULES: HelloFrame["rules"] = { basicAuth: [], allowIp: [], webhooks: [] };

/** A hand-driven agent connection, for what a well-behaved agent never sends. */
export class RawAgent {
  readonly frames: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private wake: (() => void) | undefined;

  private constructor(readonly socket: WebSocket) {
    socket.on("message", (data, isBinary) => {
      // The relay sends the frames of one turn as one message.
      if (isBinary) this.frames.push(...decodeFrames(new Uint8Array(data as Buffer)));
      this.wake?.();
    });
    this.closed = new Promise((resolve) => {
      const done = (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() });
      socket.on("close", done);
      // The relay's close frame, as it arrives: workerd ends the TCP connection some 10 s after
      // a close it sent outside a message handler (measured), and ws reports "close" only then.
      (socket as unknown as { _receiver: { on(event: "conclude", listener: typeof done): void } })._receiver.on("conclude", done);
    });
    void this.closed.then(() => this.wake?.());
  }

  static async open(relay: Relay, name: string, headers: Record<string, string> = {}): Promise<RawAgent> {
    const socket = new WebSocket(`ws://127.0.0.1:${relay.port}${CONNECT_PATH}?name=${name}`, {
      headers: { host: `localhost:${relay.port}`, ...headers },
    });
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    return new RawAgent(socket);
  }

  /** The hello a well-behaved agent sends, with `fields` changed. */
  static helloFrame(name: string, fields: Partial<HelloFrame> = {}): HelloFrame {
    return {
      type: FrameType.Hello,
      version: PROTOCOL_VERSION,
      agent: "test",
      name,
      token: "",
      claim: `claim-of-${name}-0123456789`,
      rules: NO_RULES,
      resume: null,
      ...fields,
    };
  }

  /** Opens a connection, says hello and returns the relay's answer (Ready or Refused). */
  static async say(relay: Relay, name: string, fields: Partial<HelloFrame> = {}): Promise<[RawAgent, Frame]> {
    const agent = await RawAgent.open(relay, name);
    agent.send(RawAgent.helloFrame(name, fields));
    return [agent, await agent.next()];
  }

  /** Opens a connection and says hello; resolves once the relay answers Ready. */
  static async hello(relay: Relay, name: string, fields: Partial<HelloFrame> = {}): Promise<RawAgent> {
    const [agent, answer] = await RawAgent.say(relay, name, fields);
    if (answer.type !== FrameType.Ready) throw new Error(`the relay did not answer Ready: ${JSON.stringify(answer)}`);
    return agent;
  }

  send(frame: Frame): void {
    this.socket.send(encodeFrame(frame));
  }

  /** The next frame from the relay. */
  async next(timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.socket.readyState === WebSocket.CLOSED) throw new Error("the relay closed the connection");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame from the relay within ${timeoutMs / 1000}s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.frames.shift()!;
  }

  /** The next frame of a given type, skipping others (Credit, say). */
  async nextOf<T extends Frame["type"]>(type: T): Promise<Extract<Frame, { type: T }>> {
    for (;;) {
      const frame = await this.next();
      if (frame.type === type) return frame as Extract<Frame, { type: T }>;
    }
  }
}
