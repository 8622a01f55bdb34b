// TcpPipe on real sockets: a node:net connection on loopback, the pipe on its server end and
// the test as the stream's peer (it reads the frames the pipe sends and hands it frames).
// What a pipe promises: nothing read past the peer's credit (the socket pauses), credit back
// for what the socket wrote, End as a half-close each way, Reset as an abort each way.
import { once } from "node:events";
import net from "node:net";
import {
  attachSocket,
  CREDIT_BATCH,
  type Frame,
  FrameType,
  INITIAL_WINDOW,
  MAX_DATA_CHUNK,
  type PipeEnd,
  TcpPipe,
} from "@burrow/protocol";
import { describe, expect, it, onTestFinished } from "vitest";

const STREAM = 9;

/** A connected pair on 127.0.0.1, both ends half-open capable, as the agent and `connect` make them. */
async function socketPair(): Promise<{ client: net.Socket; socket: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[net.Socket]>;
  const client = net.connect({ port: (server.address() as net.AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true });
  const [[socket]] = await Promise.all([accepted, once(client, "connect")]);
  onTestFinished(() => {
    client.destroy();
    socket.destroy();
    server.close();
  });
  return { client, socket };
}

/** Resolves once `done()` holds, checked every few milliseconds (throws after `timeoutMs`). */
async function until(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** The stream's peer: a pipe on the server's socket, the frames it sent, how it ended. */
async function piped(failureCode?: "origin-error" | "cancelled") {
  const { client, socket } = await socketPair();
  const frames: Frame[] = [];
  let ended: { end: PipeEnd; why: string } | undefined;
  let endings = 0;
  const pipe = new TcpPipe(
    STREAM,
    socket,
    (frame) => frames.push(frame),
    (_, end, why) => {
      endings++;
      ended = { end, why };
    },
    failureCode,
  );
  attachSocket(socket, pipe);
  // What the client read, and whether its reading side got EOF.
  const read: Buffer[] = [];
  let clientEof = false;
  client.on("data", (chunk: Buffer) => read.push(chunk));
  client.on("end", () => {
    clientEof = true;
  });
  return {
    client,
    socket,
    pipe,
    frames,
    get ended() {
      return ended;
    },
    get endings() {
      return endings;
    },
    get clientEof() {
      return clientEof;
    },
    clientRead: () => Buffer.concat(read),
    /** Bytes of Data the pipe sent. */
    sentBytes: () => frames.reduce((sum, f) => sum + (f.type === FrameType.Data ? f.bytes.byteLength : 0), 0),
    of: <T extends Frame["type"]>(type: T) => frames.filter((f): f is Extract<Frame, { type: T }> => f.type === type),
  };
}

/** The peer's Data for the pipe, in chunks of MAX_DATA_CHUNK. */
function give(pipe: TcpPipe, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.byteLength; at += MAX_DATA_CHUNK) {
    expect(
      pipe.receive({ type: FrameType.Data, stream: STREAM, bytes: bytes.subarray(at, at + MAX_DATA_CHUNK) }),
    ).toBeUndefined();
  }
}

const pattern = (size: number) => Uint8Array.from({ length: size }, (_, i) => (i * 7 + (i >> 8)) & 0xff);

describe("a TCP pipe on a real socket", () => {
  it("sends what the socket reads as Data, writes the peer's Data to the socket, and credits it back once written", async () => {
    const p = await piped();
    p.client.write("SSH-2.0-client\r\n");
    await until(() => p.sentBytes() === 16, "the client's bytes as Data");
    expect(p.of(FrameType.Data).every((f) => f.stream === STREAM)).toBe(true);
    expect(Buffer.from(p.of(FrameType.Data)[0]!.bytes).toString()).toBe("SSH-2.0-client\r\n");
    // A batch of the peer's bytes: written to the socket, then credited back whole.
    const body = pattern(CREDIT_BATCH);
    give(p.pipe, body);
    await until(() => p.clientRead().byteLength === body.byteLength, "the peer's bytes at the client");
    expect(p.clientRead().equals(body)).toBe(true);
    await until(() => p.of(FrameType.Credit).length > 0, "a Credit for what the socket wrote");
    expect(p.of(FrameType.Credit)).toEqual([{ type: FrameType.Credit, stream: STREAM, bytes: CREDIT_BATCH }]);
    expect(p.pipe.received).toBe(CREDIT_BATCH);
    expect(p.ended).toBeUndefined();
  });

  it("pauses the socket at the peer's credit, holding no more than one read, and resumes when the peer grants more", async () => {
    const p = await piped();
    const extra = 300_000;
    const upload = pattern(INITIAL_WINDOW + extra);
    // What the socket handed the pipe, and its largest single read.
    let delivered = 0;
    let largest = 0;
    p.socket.on("data", (chunk: Buffer) => {
      delivered += chunk.byteLength;
      largest = Math.max(largest, chunk.byteLength);
    });
    p.client.write(upload);
    await until(() => p.sentBytes() === INITIAL_WINDOW, "a window of Data");
    // The read that found no credit left paused the socket (if the window ended on a read's
    // edge, the next read does).
    await until(() => p.socket.isPaused(), "the socket paused");
    // Paused: the socket delivers nothing more, so nothing more goes out without credit.
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(p.sentBytes()).toBe(INITIAL_WINDOW);
    // The one read past the credit waits in the pipe; the rest stays with the socket.
    expect(delivered - INITIAL_WINDOW).toBeLessThanOrEqual(largest);
    expect(delivered).toBeLessThan(upload.byteLength);
    expect(p.pipe.receive({ type: FrameType.Credit, stream: STREAM, bytes: extra })).toBeUndefined();
    await until(() => p.sentBytes() === upload.byteLength, "the rest, once credited");
    expect(p.socket.isPaused()).toBe(false);
    const sent = Buffer.concat(p.of(FrameType.Data).map((f) => f.bytes));
    expect(sent.equals(upload)).toBe(true);
    expect(p.of(FrameType.Data).every((f) => f.bytes.byteLength <= MAX_DATA_CHUNK)).toBe(true);
  });

  it("sends End only after what waits for credit, when the socket reads EOF", async () => {
    const p = await piped();
    p.client.end(pattern(INITIAL_WINDOW + 10));
    await until(() => p.sentBytes() === INITIAL_WINDOW, "a window of Data");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(p.of(FrameType.End)).toEqual([]);
    p.pipe.receive({ type: FrameType.Credit, stream: STREAM, bytes: 10 });
    await until(() => p.of(FrameType.End).length === 1, "End after the last bytes");
    expect(p.frames.at(-1)).toEqual({ type: FrameType.End, stream: STREAM });
    expect(p.sentBytes()).toBe(INITIAL_WINDOW + 10);
  });

  it("half-closes: the client's EOF becomes End while the peer still writes, and the peer's End is the client's EOF", async () => {
    const p = await piped();
    // `cat > file` over ssh: input ends, output goes on.
    p.client.end("last line\n");
    await until(() => p.of(FrameType.End).length === 1, "End from the client's EOF");
    give(p.pipe, new TextEncoder().encode("still answering"));
    await until(() => p.clientRead().toString() === "still answering", "the peer's bytes after the client's EOF");
    expect(p.clientEof).toBe(false);
    expect(p.ended).toBeUndefined();
    expect(p.pipe.receive({ type: FrameType.End, stream: STREAM })).toBeUndefined();
    await until(() => p.clientEof, "EOF at the client");
    await until(() => p.ended !== undefined, "the stream over both ways");
    expect(p.ended).toEqual({ end: "closed", why: "" });
    expect(p.pipe.finished).toBe(true);
    expect(p.of(FrameType.Reset)).toEqual([]);
    await until(() => p.socket.destroyed, "the socket closed, both ways ended");
    expect(p.endings).toBe(1);
  });

  it("half-closes the other way: after the peer's End the client still sends, then its EOF ends the stream", async () => {
    const p = await piped();
    p.pipe.receive({ type: FrameType.End, stream: STREAM });
    await until(() => p.clientEof, "EOF at the client");
    p.client.end("the rest of the upload");
    await until(() => p.of(FrameType.End).length === 1, "End after the client's last bytes");
    expect(Buffer.concat(p.of(FrameType.Data).map((f) => f.bytes)).toString()).toBe("the rest of the upload");
    await until(() => p.ended !== undefined, "the stream over both ways");
    expect(p.ended?.end).toBe("closed");
  });

  it("is reset by the peer: the socket is destroyed and the stream ends as reset-by-peer", async () => {
    const p = await piped();
    expect(p.pipe.receive({ type: FrameType.Reset, stream: STREAM, code: "cancelled", message: "the visitor left" })).toBe(
      undefined,
    );
    await until(() => p.clientEof, "the client to see the connection end");
    expect(p.socket.destroyed).toBe(true);
    expect(p.ended).toEqual({ end: "reset-by-peer", why: "the visitor left" });
    // Nothing goes back for a Reset, and frames after it are ignored.
    expect(p.frames).toEqual([]);
    expect(p.pipe.receive({ type: FrameType.Data, stream: STREAM, bytes: new Uint8Array(1) })).toBeUndefined();
    expect(p.endings).toBe(1);
  });

  it("resets the stream with its failure code when the socket is reset (RST)", async () => {
    const p = await piped("origin-error");
    p.client.resetAndDestroy();
    await until(() => p.ended !== undefined, "the pipe to see the reset");
    expect(p.ended?.end).toBe("reset-here");
    expect(p.of(FrameType.Reset)).toEqual([
      { type: FrameType.Reset, stream: STREAM, code: "origin-error", message: expect.stringMatching(/ECONNRESET|closed/) },
    ]);
    expect(p.of(FrameType.End)).toEqual([]);
    expect(p.endings).toBe(1);
  });

  it("aborts when its owner gives up: the peer hears cancelled, the socket is destroyed", async () => {
    const p = await piped();
    p.pipe.abort("the session ended");
    await until(() => p.clientEof, "the client to see the connection end");
    expect(p.socket.destroyed).toBe(true);
    expect(p.frames).toEqual([{ type: FrameType.Reset, stream: STREAM, code: "cancelled", message: "the session ended" }]);
    expect(p.ended).toEqual({ end: "reset-here", why: "the session ended" });
    // A quiet abort (the peer cannot hear) sends nothing.
    const q = await piped();
    q.pipe.abort("gone", false);
    expect(q.frames).toEqual([]);
  });

  it.each([
    [
      "Data past the window",
      (pipe: TcpPipe) => {
        give(pipe, new Uint8Array(INITIAL_WINDOW));
        return pipe.receive({ type: FrameType.Data, stream: STREAM, bytes: new Uint8Array(1) });
      },
      /1 bytes arrived with credit for 0/,
    ],
    [
      "Data after End",
      (pipe: TcpPipe) => {
        pipe.receive({ type: FrameType.End, stream: STREAM });
        return pipe.receive({ type: FrameType.Data, stream: STREAM, bytes: new Uint8Array(1) });
      },
      /Data after End/,
    ],
    [
      "a second End",
      (pipe: TcpPipe) => {
        pipe.receive({ type: FrameType.End, stream: STREAM });
        return pipe.receive({ type: FrameType.End, stream: STREAM });
      },
      /a second End/,
    ],
    ["a Credit past the window", (pipe: TcpPipe) => pipe.receive({ type: FrameType.Credit, stream: STREAM, bytes: 1 }), /window/],
    [
      "an HTTP frame",
      (pipe: TcpPipe) => pipe.receive({ type: FrameType.ResponseHead, stream: STREAM, status: 200, headers: [] }),
      new RegExp(`a frame of type ${FrameType.ResponseHead} on a TCP stream`),
    ],
  ])("says why %s breaks the protocol, for its owner to reset the stream", async (_, act, why) => {
    const p = await piped();
    expect(act(p.pipe)).toMatch(why);
  });
});
