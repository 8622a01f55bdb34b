// The HTTPS transport (for networks that block WebSockets): a session opened with a POST, the
// relay's frames collected by long polls, the agent's sent in numbered POSTs.
import {
  decodeFrames,
  decodePollAnswer,
  type Frame,
  FrameType,
  type PollAnswer,
  type RequestHeadFrame,
  SESSION_HEADER,
  SESSION_PATH,
} from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { helloFrame, MemoryRelay, message, tick } from "./_host.ts";

/** An agent on the HTTPS transport, spoken by hand. */
class PollingAgent {
  private seq = 0;
  /** The last batch received, which the next poll acknowledges. */
  ack = 0;

  private constructor(
    readonly relay: MemoryRelay,
    readonly name: string,
    readonly session: string,
  ) {}

  static async open(relay: MemoryRelay, name: string): Promise<PollingAgent> {
    const response = await relay.fetch(`${SESSION_PATH}?name=${name}`, { method: "POST" });
    expect(response.status).toBe(201);
    const { session } = (await response.json()) as { session: string };
    return new PollingAgent(relay, name, session);
  }

  /** Sends frames as POST number `seq` (the next one unless given). */
  post(frames: Frame[], seq = ++this.seq): Promise<Response> {
    return this.relay.fetch(`${SESSION_PATH}?name=${this.name}&seq=${seq}`, {
      method: "POST",
      headers: { [SESSION_HEADER]: this.session },
      body: message(...frames) as Uint8Array<ArrayBuffer>,
    });
  }

  /** A long poll acknowledging `ack`; the answer and its frames (Acks left out). */
  async poll(wait = 1000, ack = this.ack): Promise<{ answer: PollAnswer; frames: Frame[]; status: number }> {
    const response = await this.relay.fetch(`${SESSION_PATH}?name=${this.name}&ack=${ack}&wait=${wait}`, {
      headers: { [SESSION_HEADER]: this.session },
    });
    if (response.status !== 200)
      return { status: response.status, answer: { seq: 0, close: undefined, frames: new Uint8Array() }, frames: [] };
    const answer = decodePollAnswer(new Uint8Array(await response.arrayBuffer()));
    if (answer.frames.byteLength > 0) this.ack = answer.seq;
    const frames = answer.frames.byteLength > 0 ? decodeFrames(answer.frames).filter((f) => f.type !== FrameType.Ack) : [];
    return { status: 200, answer, frames };
  }

  close(code = 1000): Promise<Response> {
    return this.relay.fetch(`${SESSION_PATH}?name=${this.name}&code=${code}&reason=bye`, {
      method: "DELETE",
      headers: { [SESSION_HEADER]: this.session },
    });
  }
}

const answerFrames = (head: RequestHeadFrame, body: string): Frame[] => [
  { type: FrameType.ResponseHead, stream: head.stream, status: 200, headers: [] },
  { type: FrameType.Data, stream: head.stream, bytes: new TextEncoder().encode(body) },
  { type: FrameType.End, stream: head.stream },
];

describe("the HTTPS transport", () => {
  it("opens a session, says hello in a POST, gets Ready in a poll, and serves a visitor", async () => {
    const relay = new MemoryRelay();
    const agent = await PollingAgent.open(relay, "demo");
    expect((await agent.post([helloFrame("demo")])).status).toBe(204);
    const first = await agent.poll();
    expect(first.answer.seq).toBe(1);
    expect(first.frames[0]).toMatchObject({ type: FrameType.Ready, name: "demo" });

    // A poll waiting when the request comes is answered with it, long before its wait is over.
    const waiting = agent.poll(5000);
    await tick(10);
    const response = relay.visit("demo", "/over-https");
    const asked = Date.now();
    const { frames } = await waiting;
    expect(Date.now() - asked).toBeLessThan(1000);
    const head = frames.find((f) => f.type === FrameType.RequestHead) as RequestHeadFrame;
    expect(head.path).toBe("/over-https");
    expect((await agent.post(answerFrames(head, "polled"))).status).toBe(204);
    expect(await (await response).text()).toBe("polled");
  });

  it("sends a batch again to a poll that did not acknowledge it, and applies a repeated POST once", async () => {
    const relay = new MemoryRelay();
    const agent = await PollingAgent.open(relay, "demo");
    await agent.post([helloFrame("demo")]);
    await agent.poll();
    const response = relay.visit("demo", "/x");
    const batch = await agent.poll();
    const head = batch.frames.find((f) => f.type === FrameType.RequestHead) as RequestHeadFrame;
    // The answer was lost on the way: the next poll acknowledges the batch before it.
    const again = await agent.poll(1000, batch.answer.seq - 1);
    expect(again.answer.seq).toBe(batch.answer.seq);
    expect(again.frames).toEqual(batch.frames);

    await agent.post(answerFrames(head, "once"), 2);
    expect((await agent.post(answerFrames(head, "once"), 2)).status).toBe(204);
    expect(await (await response).text()).toBe("once");
    // Applied twice, the repeat would be frames for a stream that is gone, answered with Resets.
    const after = await agent.poll(300);
    expect(after.frames.filter((f) => f.type === FrameType.Reset)).toEqual([]);
  });

  it("refuses a POST out of order (409), an unknown session (404), and ends the session on DELETE", async () => {
    const relay = new MemoryRelay();
    const agent = await PollingAgent.open(relay, "demo");
    await agent.post([helloFrame("demo")]);
    await agent.poll();
    const skipped = await agent.post([{ type: FrameType.Ack, received: 0 }], 5);
    expect([skipped.status, skipped.headers.get("x-burrow-error")]).toEqual([409, "bad-request"]);
    const unknown = await relay.fetch(`${SESSION_PATH}?name=demo&ack=0&wait=0`, {
      headers: { [SESSION_HEADER]: "no-such-session" },
    });
    expect([unknown.status, unknown.headers.get("x-burrow-error")]).toEqual([404, "not-found"]);

    expect((await agent.close(1000)).status).toBe(204);
    const page = await relay.visit("demo", "/");
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([502, "agent-offline"]);
    expect((await agent.poll(0)).status).toBe(404);
  });
});
