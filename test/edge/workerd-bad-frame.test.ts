// What the relay's side of the agent connection (workerd's own WebSocket implementation, under
// `wrangler dev` and under plain `workerd serve`) does with a frame that breaks RFC 6455. The
// agent holds the relay to the RFC (agent/src/net/websocket.ts); this records how strict the
// peer is in return. Nothing here is Burrow's code: it documents the platform, as observed with
// the workerd of wrangler 4.86.0 (both launchers behave the same):
// - RSV1 set, or a fragmented control frame: a 1002 close frame at once, with workerd's own
//   reason; then workerd no longer reads (our answering close frame changes nothing) and does not
//   end TCP: it resets the connection about 20s later (measured once under plain workerd; not asserted).
// - An unmasked frame from the client is accepted (RFC 6455 5.1 says fail): the Durable Object
//   gets the message, and the relay's own check answers 4002 (not msgpack).
// - A close frame carrying 1005 (which may not be sent, 7.4.1) is accepted too: the relay's
//   close handler answers 1000 "closed" and TCP ends.
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { CONNECT_PATH } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Relay } from "../_relay.ts";
import { frame } from "../_ws-peer.ts";

/** What came back after the bad frame: the relay's close code, if any, and how TCP ended. */
interface Answer {
  closeCode: number | undefined;
  closeReason: string;
  /**
   * "end": a FIN (after our answer to its close frame, when it sent one); "reset": ECONNRESET;
   * "open": still open 2s after the bad frame.
   */
  ending: "end" | "reset" | "open";
}

/** Opens the agent connect path by hand and returns the socket once the 101 is in. */
async function upgrade(port: number): Promise<{ socket: Socket; rest: Buffer }> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.write(
    [
      `GET ${CONNECT_PATH}?name=x HTTP/1.1`,
      `Host: localhost:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`,
      "Sec-WebSocket-Version: 13",
      "",
      "",
    ].join("\r\n"),
  );
  let bytes = Buffer.alloc(0);
  while (!bytes.includes("\r\n\r\n")) {
    const [chunk] = (await once(socket, "data")) as [Buffer];
    bytes = Buffer.concat([bytes, chunk]);
  }
  const at = bytes.indexOf("\r\n\r\n");
  expect(bytes.subarray(0, at).toString("latin1")).toMatch(/^HTTP\/1\.1 101 /);
  socket.pause();
  return { socket, rest: bytes.subarray(at + 4) };
}

/**
 * Sends `bad` on a fresh agent connection and waits (2s at most) for what the relay does. A close
 * frame from the relay is answered with a close frame echoing its code, as the agent would.
 */
async function answerTo(port: number, bad: Buffer): Promise<Answer> {
  const { socket, rest } = await upgrade(port);
  let received = rest;
  let closeCode: number | undefined;
  let closeReason = "";
  const ending = await new Promise<Answer["ending"]>((resolve) => {
    const timer = setTimeout(() => resolve("open"), 2000);
    const parse = () => {
      // The relay's frames are unmasked; only a close frame matters here.
      while (received.byteLength >= 2 && closeCode === undefined) {
        const opcode = received[0]! & 0x0f;
        let length = received[1]! & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (received.byteLength < 4) return;
          length = received.readUInt16BE(2);
          offset = 4;
        }
        if (received.byteLength < offset + length) return;
        if (opcode === 8) {
          closeCode = length >= 2 ? received.readUInt16BE(offset) : 1005;
          closeReason = received.subarray(offset + 2, offset + length).toString();
          socket.write(frame(8, received.subarray(offset, offset + Math.min(length, 2)), { mask: true }));
        }
        received = received.subarray(offset + length);
      }
    };
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      parse();
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(error.code === "ECONNRESET" ? "reset" : "end");
    });
    socket.on("end", () => {
      clearTimeout(timer);
      resolve("end");
    });
    socket.resume();
    parse();
    socket.write(bad);
  });
  socket.destroy();
  return { closeCode, closeReason, ending };
}

describe.each(["wrangler", "workerd"] as const)("workerd (launched by %s), sent a bad frame by an agent", (launcher) => {
  let relay: Relay;

  beforeAll(async () => {
    relay = await Relay.start({ launcher });
  });

  afterAll(async () => {
    await relay?.dispose();
  });

  it("answers a text frame with RSV1 set with a 1002 close frame, and leaves TCP open", async () => {
    const answer = await answerTo(relay.port, frame(1, "hi", { mask: true, rsv: 4 }));
    expect(answer).toMatchObject({ closeCode: 1002, ending: "open" });
    expect(answer.closeReason).toMatch(/compression bit was set/);
  });

  it("answers a fragmented ping with a 1002 close frame, and leaves TCP open", async () => {
    const answer = await answerTo(relay.port, frame(9, "p", { mask: true, fin: false }));
    expect(answer).toEqual({ closeCode: 1002, closeReason: "Received fragmented control frame", ending: "open" });
  });

  it("passes an unmasked frame from the client on to the relay, which refuses its content", async () => {
    const answer = await answerTo(relay.port, frame(2, Buffer.from([1, 2, 3])));
    expect(answer).toMatchObject({ closeCode: 4002, ending: "end" });
    expect(answer.closeReason).toMatch(/msgpack/);
  });

  it("passes a close frame carrying 1005 on to the relay, which closes with 1000", async () => {
    const answer = await answerTo(relay.port, frame(8, Buffer.from([0x03, 0xed]), { mask: true }));
    expect(answer.closeCode).toBe(1000);
    // Its TCP close races our echo of its close frame: a FIN, or a reset for the late echo.
    expect(["end", "reset"]).toContain(answer.ending);
  });
});
