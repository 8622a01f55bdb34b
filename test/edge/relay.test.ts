import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CloseCode, CONNECT_PATH, FrameType, INITIAL_WINDOW, PROTOCOL_VERSION } from "@burrow/protocol";
import { encode } from "@msgpack/msgpack";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { NO_RULES, RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

describe("relay", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start(), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  describe("http routes", () => {
    it("answers 502 agent-offline, naming the tunnel, when no agent is connected", async () => {
      const response = await visit(`http://nobody.localhost:${relay.port}/x`);
      expect(response.status).toBe(502);
      expect(response.headers["x-burrow-error"]).toBe("agent-offline");
      expect(response.headers["content-type"]).toMatch(/^text\/plain/);
      expect(response.body.toString()).toMatch(/^502 agent-offline\n\nNo agent is connected for tunnel "nobody"/);
      // The command that works, with this relay's URL as agents name it, in both forms.
      const command = `npx -p burrow-agent agent --port 8000 --name nobody --relay http://localhost:${relay.port}\n`;
      expect(response.body.toString()).toContain(command);
      expect((await visit(`http://localhost:${relay.port}/t/nobody/`)).body.toString()).toContain(command);
    });

    it("redirects /t/<name> to /t/<name>/ so relative links resolve", async () => {
      const response = await visit(`http://localhost:${relay.port}/t/demo?q=1`);
      expect(response.status).toBe(308);
      expect(response.headers.location).toBe("/t/demo/?q=1");
    });

    it("answers 400 for a tunnel name that is not a DNS label", async () => {
      const response = await visit(`http://localhost:${relay.port}/t/Not_A_Name/`);
      expect(response.status).toBe(400);
      expect(response.body.toString()).toContain("lowercase letters, digits and inner hyphens");
    });

    it("answers 426 on the connect path without a WebSocket upgrade", async () => {
      const response = await visit(`http://localhost:${relay.port}${CONNECT_PATH}?name=demo`);
      expect(response.status).toBe(426);
    });

    it("answers 404 not-found elsewhere on the base domain, and describes itself at /", async () => {
      expect((await visit(`http://localhost:${relay.port}/nothing`)).headers["x-burrow-error"]).toBe("not-found");
      const landing = (await visit(`http://localhost:${relay.port}/`)).body.toString();
      expect(landing).toContain(`http://<name>.localhost:${relay.port}/`);
      expect(landing).toContain("This relay is open: anyone who can reach it can open tunnels");
    });
  });

  describe("agent connections", () => {
    it.each([
      [PROTOCOL_VERSION - 1, /upgrade the agent/],
      [PROTOCOL_VERSION + 1, /redeploy the relay/],
    ])("refuses protocol version %i, saying which side to upgrade", async (version, advice) => {
      const agent = await RawAgent.open(relay, "versions");
      agent.send({
        type: FrameType.Hello,
        version,
        agent: "test",
        name: "versions",
        token: "",
        claim: "x",
        rules: NO_RULES,
        resume: null,
      });
      const frame = await agent.next();
      expect(frame).toMatchObject({ type: FrameType.Refused, code: "version-mismatch", message: expect.stringMatching(advice) });
      expect((await agent.closed).code).toBe(CloseCode.Refused);
    });

    it("refuses a first frame that is not a hello, and a hello for another name", async () => {
      const first = await RawAgent.open(relay, "first");
      first.send({ type: FrameType.End, stream: 1 });
      expect(await first.next()).toMatchObject({ type: FrameType.Refused, code: "bad-hello" });
      const other = await RawAgent.open(relay, "mine");
      other.send({
        type: FrameType.Hello,
        version: PROTOCOL_VERSION,
        agent: "t",
        name: "theirs",
        token: "",
        claim: "claim-of-some-agent",
        rules: NO_RULES,
        resume: null,
      });
      expect(await other.next()).toMatchObject({
        type: FrameType.Refused,
        code: "bad-hello",
        message: expect.stringContaining('"theirs"'),
      });
    });

    it("resets only the stream a bad frame names, and closes a connection whose bytes are not frames", async () => {
      const good = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "bystander"));
      try {
        const bad = await RawAgent.hello(relay, "breaker");
        bad.socket.send(encode([FrameType.ResponseHead, 1, 999, []]));
        expect(await bad.nextOf(FrameType.Reset)).toMatchObject({
          type: FrameType.Reset,
          stream: 1,
          code: "protocol-error",
          message: expect.stringContaining("ResponseHead frame status is 999"),
        });
        bad.socket.send(new Uint8Array([0xc1]));
        const { code, reason } = await bad.closed;
        expect(code).toBe(CloseCode.ProtocolError);
        expect(reason).toContain("not valid msgpack");
        expect((await visit(at(good.url, "/echo"))).status).toBe(200);
      } finally {
        await good.stop("SIGINT");
      }
    });

    it("hands the tunnel to a newer connection of the same claim when the holder does not answer the relay's ping (half-open)", async () => {
      const first = await RawAgent.hello(relay, "same", { claim: "claim-number-one" });
      const second = await RawAgent.hello(relay, "same", { claim: "claim-number-one" });
      expect(second.frames).toEqual([]);
      expect((await first.closed).code).toBe(CloseCode.Replaced);
      second.socket.close(1000);
    });

    it("keeps a newer connection's visitor WebSockets when the replaced one's close comes late", async () => {
      const first = await RawAgent.hello(relay, "late", { claim: "claim-number-one" });
      first.socket.pause(); // it does not read the relay's close yet: the relay hears of it later
      const second = await RawAgent.hello(relay, "late", { claim: "claim-number-one" });
      const visitor = new WebSocket(`ws://127.0.0.1:${relay.port}/chat`, { headers: { host: `late.localhost:${relay.port}` } });
      const closed = new Promise<number>((resolve) => visitor.on("close", (code) => resolve(code)));
      const head = await second.next();
      expect(head).toMatchObject({ type: FrameType.RequestHead, path: "/chat" });
      second.send({ type: FrameType.ResponseHead, stream: (head as { stream: number }).stream, status: 101, headers: [] });
      await new Promise((resolve, reject) => visitor.once("open", resolve).once("error", reject));
      first.socket.resume();
      expect((await first.closed).code).toBe(CloseCode.Replaced);
      // The relay has handled the old connection's close: the visitor's socket is still open.
      visitor.send("still here");
      let frame = await second.next();
      while (frame.type !== FrameType.WsMessage) frame = await second.next();
      expect(new TextDecoder().decode((frame as { bytes: Uint8Array }).bytes)).toBe("still here");
      visitor.close(1000);
      expect(await closed).toBe(1000);
      second.socket.close(1000);
    });

    it("closes a visitor's WebSocket with the origin's reason cut to 123 bytes at a character, not ASCII either", async () => {
      const agent = await RawAgent.hello(relay, "long-reason");
      const visitor = new WebSocket(`ws://127.0.0.1:${relay.port}/`, {
        headers: { host: `long-reason.localhost:${relay.port}` },
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 101, headers: [] });
      await new Promise((resolve, reject) => visitor.once("open", resolve).once("error", reject));
      // The relay's close frame, as it arrives (ws reports "close" only once TCP ends).
      const closed = new Promise<[number, string]>((resolve) =>
        (
          visitor as unknown as { _receiver: { on(event: "conclude", listener: (code: number, reason: Buffer) => void): void } }
        )._receiver.on("conclude", (code, reason) => resolve([code, reason.toString()])),
      );
      // 100 characters, as the frame allows, but 200 bytes of UTF-8.
      agent.send({ type: FrameType.WsClose, stream: head.stream, code: 4000, reason: "é".repeat(100) });
      expect(await closed).toEqual([4000, `${"é".repeat(60)}...`]);
      agent.socket.close(1000);
    });

    it("sends a visitor's messages to the agent up to its credit and not a byte past, cutting a piece where the credit ends", async () => {
      const agent = await RawAgent.hello(relay, "credit-bound");
      const visitor = new WebSocket(`ws://127.0.0.1:${relay.port}/`, {
        headers: { host: `credit-bound.localhost:${relay.port}` },
      });
      const head = await agent.nextOf(FrameType.RequestHead);
      agent.send({ type: FrameType.ResponseHead, stream: head.stream, status: 101, headers: [] });
      await new Promise((resolve, reject) => visitor.once("open", resolve).once("error", reject));
      // 1,000 bytes, then a window's worth: its last 64 KiB piece would end 1,000 bytes past the credit.
      visitor.send(new Uint8Array(1000));
      visitor.send(new Uint8Array(INITIAL_WINDOW));
      const pieces: { bytes: Uint8Array; final: boolean }[] = [];
      let sent = 0;
      while (sent < INITIAL_WINDOW) {
        const piece = await agent.nextOf(FrameType.WsMessage);
        pieces.push(piece);
        sent += piece.bytes.byteLength;
      }
      expect(sent).toBe(INITIAL_WINDOW);
      expect(pieces.at(-1)?.final).toBe(false);
      // Nothing more without credit.
      for (const until = Date.now() + 500; Date.now() < until; ) {
        const frame = await agent.next(until - Date.now()).catch(() => undefined);
        expect(frame?.type).not.toBe(FrameType.WsMessage);
      }
      agent.send({ type: FrameType.Credit, stream: head.stream, bytes: 1000 });
      expect(await agent.nextOf(FrameType.WsMessage)).toMatchObject({ final: true, bytes: new Uint8Array(1000) });
      visitor.close(1000);
      agent.socket.close(1000);
    });

    it("refuses a name in use by another agent process, which exits 3 with a hint", async () => {
      const holder = await AgentProcess.start("node", tunnelArgs(origin.port, relay, "taken"));
      try {
        // Its own config directory: an agent of this user on this machine would share the
        // holder's claim file and take the tunnel over instead (agent/src/claims.ts).
        const second = new AgentProcess("node", tunnelArgs(origin.port, relay, "taken"), {
          XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), "burrow-config-")),
        });
        expect(await second.exited).toBe(3);
        expect(second.output).toContain(
          'error: the relay refused the tunnel: the tunnel name "taken" is in use by another agent',
        );
        expect(second.output).toContain("hint: pick another name with --name");
      } finally {
        await holder.stop("SIGINT");
      }
    });

    it.each(["websocket", "https"])(
      "refuses over %s a second agent of the same user (same claim file) the name its first agent holds; the first serves on",
      async (transport) => {
        const home = mkdtempSync(join(tmpdir(), "burrow-config-"));
        const name = `twice-${transport}`;
        const args = [...tunnelArgs(origin.port, relay, name), "--transport", transport];
        const holder = await AgentProcess.start("node", args, { XDG_CONFIG_HOME: home });
        try {
          const second = new AgentProcess("node", args, { XDG_CONFIG_HOME: home });
          expect(await second.exited, second.output).toBe(3);
          expect(second.output).toContain(
            `error: the relay refused the tunnel: the name "${name}" is in use by another agent of yours on this relay: stop it, or pick another --name`,
          );
          expect(second.output).toContain("hint: agents of one user on one machine share their claim to a name");
          expect(holder.output).not.toContain("taken over");
          expect((await visit(at(holder.url, "/echo"))).status).toBe(200);
        } finally {
          await holder.stop("SIGINT");
        }
      },
    );

    it("keeps a dropped agent's name for it for a while, and frees it at once after a clean stop", async () => {
      const dropped = await RawAgent.hello(relay, "keep", { claim: "claim-that-is-mine" });
      dropped.socket.terminate();
      await dropped.closed;
      const squatter = await RawAgent.open(relay, "keep");
      squatter.send({
        type: FrameType.Hello,
        version: PROTOCOL_VERSION,
        agent: "t",
        name: "keep",
        token: "",
        claim: "claim-of-another",
        rules: NO_RULES,
        resume: null,
      });
      expect(await squatter.next()).toMatchObject({
        code: "name-taken",
        message: expect.stringMatching(/kept for its agent for \d+s more/),
      });
      const back = await RawAgent.hello(relay, "keep", { claim: "claim-that-is-mine" });
      expect(back.frames).toEqual([]);
      back.socket.close(1000, "agent stopped");
      await back.closed;
      const next = await RawAgent.hello(relay, "keep", { claim: "claim-of-another", rules: NO_RULES, resume: null });
      expect(next.socket.readyState).toBe(WebSocket.OPEN);
      next.socket.close(1000);
    });
  });
});

describe("relay with a token", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ vars: { BURROW_TOKEN: "s3cret" } }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it.each([
    ["no token", [], /this relay requires a token: pass --token-file, --token or BURROW_TOKEN/],
    ["a wrong token", ["--token", "guess"], /the token is not one this relay was given/],
  ])("refuses an agent with %s; it exits 3 and says what to do", async (_, extra, message) => {
    const agent = new AgentProcess("node", [...tunnelArgs(origin.port, relay), ...extra]);
    expect(await agent.exited).toBe(3);
    expect(agent.output).toMatch(message);
  });

  it("accepts the right token, from the environment too", async () => {
    const agent = await AgentProcess.start("node", tunnelArgs(origin.port, relay), {
      BURROW_TOKEN: "s3cret",
    });
    expect((await visit(at(agent.url, "/echo"))).status).toBe(200);
    await agent.stop("SIGINT");
  });
});
