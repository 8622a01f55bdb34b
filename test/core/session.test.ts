// The agent's session outlives its connection: after a cut, the same agent resumes it on a new
// connection, says how many frames it got, and the relay sends again what it missed.
import { CloseCode, type Frame, FrameType, type RequestHeadFrame } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { type MemoryLink, MemoryRelay } from "./_host.ts";

const text = (s: string) => new TextEncoder().encode(s);

function answer(link: MemoryLink, head: RequestHeadFrame, body: string): Promise<void> {
  return link.deliver(
    { type: FrameType.ResponseHead, stream: head.stream, status: 200, headers: [] },
    { type: FrameType.Data, stream: head.stream, bytes: text(body) },
    { type: FrameType.End, stream: head.stream },
  );
}

/** The frames of the session the agent got on `link` (Ready, Refused and Acks are not counted). */
function counted(link: MemoryLink): Frame[] {
  return link.frames().filter((f) => f.type !== FrameType.Ready && f.type !== FrameType.Refused && f.type !== FrameType.Ack);
}

describe("the agent's session", () => {
  it("is resumed after a cut (1006): the frames the agent missed are sent again, and its request is answered", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    const response = relay.visit("demo", "/lost");
    const lost = await first.link.nextOf(FrameType.RequestHead);
    await first.link.nextOf(FrameType.End);
    // Those frames were in flight when the connection broke: the agent never got them.
    first.link.cut(1006);
    const second = await relay.agent("demo", { resume: { session: first.ready.session, received: 0 } });
    expect(second.ready).toMatchObject({ session: first.ready.session, resumed: true, received: 0 });
    expect(await second.link.nextOf(FrameType.RequestHead)).toEqual(lost);
    expect(await second.link.next()).toEqual({ type: FrameType.End, stream: lost.stream });
    await answer(second.link, lost, "found");
    expect(await (await response).text()).toBe("found");
  });

  it("sends again only what follows the count the agent gives, and tells the agent how many of its frames it got", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    const a = relay.visit("demo", "/a");
    const headA = await first.link.nextOf(FrameType.RequestHead);
    await first.link.nextOf(FrameType.End);
    const got = counted(first.link).length;
    await answer(first.link, headA, "a");
    expect(await (await a).text()).toBe("a");
    const b = relay.visit("demo", "/b");
    const headB = await first.link.nextOf(FrameType.RequestHead);
    first.link.cut(1006, "proxy went away");
    const second = await relay.agent("demo", { resume: { session: first.ready.session, received: got } });
    // The agent's three frames (ResponseHead, Data, End) reached the relay.
    expect(second.ready).toMatchObject({ resumed: true, received: 3 });
    expect(await second.link.nextOf(FrameType.RequestHead)).toEqual(headB);
    expect(counted(second.link).some((f) => f.type === FrameType.RequestHead && f.stream === headA.stream)).toBe(false);
    await answer(second.link, headB, "b");
    expect(await (await b).text()).toBe("b");
  });

  it("keeps a visitor who arrives during the cut waiting for the agent, then serves it", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    first.link.cut(1006);
    await relay.settled();
    const response = relay.visit("demo", "/meanwhile");
    const second = await relay.agent("demo", { resume: { session: first.ready.session, received: 0 } });
    const head = await second.link.nextOf(FrameType.RequestHead);
    expect(head.path).toBe("/meanwhile");
    await answer(second.link, head, "waited");
    expect(await (await response).text()).toBe("waited");
  });

  it("starts a new session for a resume it does not know, and fails the old session's requests (502 agent-disconnected)", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    const response = relay.visit("demo", "/old");
    await first.link.nextOf(FrameType.RequestHead);
    first.link.cut(1006);
    const second = await relay.agent("demo", { resume: { session: "not-that-session", received: 0 } });
    expect(second.ready.resumed).toBe(false);
    expect(second.ready.session).not.toBe(first.ready.session);
    const page = await response;
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([502, "agent-disconnected"]);
    expect(await page.text()).toContain("reconnected as a new session");
  });

  it("ends at once when the agent stops cleanly (1000): requests in flight fail, an open relay's name is free", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo");
    const response = relay.visit("demo", "/x");
    await first.link.nextOf(FrameType.RequestHead);
    first.link.cut(CloseCode.Normal, "stopped");
    const page = await response;
    expect([page.status, page.headers.get("x-burrow-error")]).toEqual([502, "agent-disconnected"]);
    await relay.settled();
    await relay.agent("demo", { claim: "someone-else-0123456789" });
  });

  it("ends after RESUME_SECONDS without its agent: its requests fail with 502 agent-disconnected", async () => {
    const relay = new MemoryRelay({ RESUME_SECONDS: "0.2" });
    const first = await relay.agent("demo");
    const response = relay.visit("demo", "/x");
    await first.link.nextOf(FrameType.RequestHead);
    const cutAt = Date.now();
    first.link.cut(1006);
    const page = await response;
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(190);
    expect(page.headers.get("x-burrow-error")).toBe("agent-disconnected");
    expect(await page.text()).toContain("did not come back within 0.2s");
    // Too late to resume: a new session.
    const second = await relay.agent("demo", { resume: { session: first.ready.session, received: 0 } });
    expect(second.ready.resumed).toBe(false);
  });
});
