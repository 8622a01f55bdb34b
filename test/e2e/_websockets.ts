import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { blob, sha256 } from "../_bytes.ts";
import { Origin } from "../_origin.ts";
import { Relay, type RelayLauncher } from "../_relay.ts";

const MB = 1024 * 1024;

/** A visitor's WebSocket to `url` (ws:// form of a tunnel URL), dialing 127.0.0.1 with its Host. */
function connect(url: string, protocols: string[] = [], headers: Record<string, string> = {}): WebSocket {
  const target = new URL(url.replace(/^http/, "ws"));
  const host = target.host;
  target.hostname = "127.0.0.1";
  return new WebSocket(target.href, protocols, { headers: { host, ...headers }, maxPayload: 64 * MB });
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
}

/** Resolves with the next message and whether it was binary. */
function message(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve, reject) => {
    ws.once("message", (data: Buffer, binary: boolean) => resolve({ data, binary }));
    ws.once("close", (code) => reject(new Error(`closed with ${code} before a message`)));
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** Visitor WebSockets through a tunnel, run once per agent runtime and once per relay. */
export function websocketSuite(runtime: RuntimeName, relayLauncher?: RelayLauncher): void {
  describe(`visitor WebSockets through a ${runtime} agent${relayLauncher ? ` and the ${relayLauncher} relay` : ""}`, () => {
    let relay: Relay;
    let origin: Origin;
    let agent: AgentProcess;
    const at = (path: string) => `${agent.url}${path}`;

    beforeAll(async () => {
      // An agent that is gone for good is noticed RESUME_SECONDS after its connection drops.
      [relay, origin] = await Promise.all([
        Relay.start({ launcher: relayLauncher, vars: { RESUME_SECONDS: "2" } }),
        Origin.start(),
      ]);
      agent = await AgentProcess.start(runtime, tunnelArgs(origin.port, relay, `ws-${runtime}`));
    }, 90_000);

    afterAll(async () => {
      await agent?.stop("SIGINT");
      await relay?.dispose();
      await origin?.close();
    });

    it("carries text and binary messages, each as its own type", async () => {
      const ws = connect(at("/ws/echo"));
      await opened(ws);
      ws.send("héllo, tunnel");
      expect(await message(ws)).toEqual({ data: Buffer.from("héllo, tunnel"), binary: false });
      ws.send(Buffer.from([0, 1, 2, 255]), { binary: true });
      expect(await message(ws)).toEqual({ data: Buffer.from([0, 1, 2, 255]), binary: true });
      ws.send("");
      expect(await message(ws)).toEqual({ data: Buffer.alloc(0), binary: false });
      ws.close();
    });

    it("carries a 16 MiB message each way intact", async () => {
      const ws = connect(at("/ws/hash"));
      await opened(ws);
      const big = blob(16 * MB);
      ws.send(big, { binary: true });
      expect((await message(ws)).data.toString()).toBe(`binary ${16 * MB} ${sha256(big)}`);
      ws.send(`send ${16 * MB}`);
      const back = await message(ws);
      expect(back.binary).toBe(true);
      expect(sha256(back.data)).toBe(sha256(big));
      ws.close();
    });

    it("passes the visitor's close code and reason to the origin", async () => {
      const ws = connect(at("/ws/echo"));
      await opened(ws);
      ws.send("ping");
      await message(ws);
      const server = origin.sockets.at(-1)!;
      const seen = closed(server);
      ws.close(4000, "visitor done");
      expect(await seen).toEqual({ code: 4000, reason: "visitor done" });
    });

    it("passes the origin's close code and reason to the visitor", async () => {
      const ws = connect(at("/ws/close?code=4001&reason=origin%20says%20bye"));
      await opened(ws);
      ws.send("close please");
      expect(await closed(ws)).toEqual({ code: 4001, reason: "origin says bye" });
    });

    it("answers with the subprotocol the origin chose", async () => {
      const ws = connect(at("/ws/echo"), ["chat.v1", "chat.v2"]);
      await opened(ws);
      expect(ws.protocol).toBe("chat.v2");
      ws.close();
    });

    it("sends the visitor's cookies and other headers in the origin's handshake, with the origin's Host", async () => {
      const ws = connect(at("/ws/headers"), [], { cookie: "session=abc", "x-custom": "kept" });
      // The origin speaks first: listening before the open, as the 101 and this message may
      // come in one read, and then ws says both in one turn.
      const first = message(ws);
      await opened(ws);
      const headers = JSON.parse((await first).data.toString());
      expect(headers).toMatchObject({ cookie: "session=abc", "x-custom": "kept", host: `localhost:${origin.port}` });
      ws.close();
    });

    it("keeps 50 sockets apart at once", async () => {
      const sockets = Array.from({ length: 50 }, () => connect(at("/ws/echo")));
      await Promise.all(sockets.map(opened));
      const answers = await Promise.all(
        sockets.map((ws, i) => {
          const answer = message(ws);
          ws.send(`socket ${i}`);
          return answer;
        }),
      );
      expect(answers.map((answer) => answer.data.toString())).toEqual(sockets.map((_, i) => `socket ${i}`));
      for (const ws of sockets) ws.close();
    });

    it("passes the origin's refusal of an upgrade as its HTTP response", async () => {
      const ws = connect(at("/not-a-socket"));
      const status = await new Promise<number>((resolve) => {
        ws.on("unexpected-response", (_request, response) => resolve(response.statusCode!));
        ws.on("error", () => {});
      });
      expect(status).toBe(403);
    });

    it("closes the visitor's sockets with 1011 when the agent goes away and does not come back", async () => {
      // Heartbeats every second: on the HTTPS transport, the relay notices a dead agent by its missing polls.
      const extra = await AgentProcess.start(runtime, [
        ...tunnelArgs(origin.port, relay, `ws-${runtime}-gone`),
        "--heartbeat",
        "1",
      ]);
      const ws = connect(`${extra.url}/ws/echo`);
      await opened(ws);
      const seen = closed(ws);
      await extra.stop("SIGKILL");
      expect((await seen).code).toBe(1011);
    });
  });
}
