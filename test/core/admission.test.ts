// Who may open a tunnel, and who owns its name: the hello as the core judges it, reached the way
// an agent reaches it (through the front's connect path).
import { CloseCode, type Frame, FrameType, PROTOCOL_VERSION, SESSION_PATH } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { helloFrame, MemoryRelay, tick } from "./_host.ts";

const TOKENS = { BURROW_TOKENS: "alice:alice-token-0001,bob:bob-token-0002" };

function refusal(answer: Frame): { code: string; message: string } {
  if (answer.type !== FrameType.Refused) throw new Error(`expected Refused, got ${JSON.stringify(answer)}`);
  return answer;
}

describe("an open relay", () => {
  it("gives a free name to the first claim and refuses it to another claim while the holder is connected", async () => {
    const relay = new MemoryRelay();
    const holder = await relay.agent("demo");
    expect(holder.ready).toMatchObject({ name: "demo", open: true, resumed: false });
    const { link, answer } = await relay.say("demo", { claim: "another-claim-0123456789" });
    expect(refusal(answer).code).toBe("name-taken");
    expect(link.closed?.code).toBe(CloseCode.Refused);
    expect(link.closed?.reason).toMatch(/^name-taken: /);
    expect(holder.link.closed).toBeUndefined();
  });

  it("refuses a newer agent of the same claim while the holder answers the relay's ping", async () => {
    const relay = new MemoryRelay();
    const holder = await relay.agent("demo");
    const pending = relay.say("demo");
    // The holder is asked whether it is alive, and says so.
    for (let waited = 0; !holder.link.sent.includes("burrow:ping"); waited++) {
      if (waited > 200) throw new Error("the holder was never asked whether it is alive");
      await tick(5);
    }
    await holder.link.tunnel.core.message(holder.link, "burrow:pong");
    const { answer } = await pending;
    expect(refusal(answer).code).toBe("name-in-use");
    expect(holder.link.closed).toBeUndefined();
  });

  it("refuses a claim too short to prove anything", async () => {
    const relay = new MemoryRelay();
    const { answer } = await relay.say("demo", { claim: "short" });
    expect(refusal(answer).code).toBe("bad-hello");
  });

  it("refuses a first frame that is not a hello, and a hello for another name than the connect URL's", async () => {
    const relay = new MemoryRelay();
    const first = await relay.connect("demo");
    await first.deliver({ type: FrameType.Ack, received: 0 });
    expect(refusal(await first.next()).code).toBe("bad-hello");
    expect(first.closed?.code).toBe(CloseCode.Refused);
    const other = await relay.connect("demo");
    await other.deliver(helloFrame("other"));
    expect(refusal(await other.next()).message).toContain('the connection was opened for "demo"');
  });

  it("refuses another protocol version, saying which side to upgrade", async () => {
    const relay = new MemoryRelay();
    const older = await relay.say("demo", { version: PROTOCOL_VERSION - 1 });
    expect(refusal(older.answer)).toMatchObject({
      code: "version-mismatch",
      message: expect.stringMatching(/upgrade the agent/),
    });
    const newer = await relay.say("demo", { version: PROTOCOL_VERSION + 1 });
    expect(refusal(newer.answer).message).toMatch(/redeploy the relay/);
  });

  it("refuses reserved and punycode names, and admits punycode when ALLOW_PUNYCODE_NAMES is set", async () => {
    const relay = new MemoryRelay();
    expect(refusal((await relay.say("admin")).answer).code).toBe("name-reserved");
    const punycode = await relay.say("xn--80ak6aa92e");
    expect(refusal(punycode.answer)).toMatchObject({ code: "name-reserved", message: expect.stringMatching(/punycode/) });
    expect(punycode.link.closed?.code).toBe(CloseCode.Refused);
    // Visitors get no further than the front for such a name.
    const visit = await relay.visit("xn--80ak6aa92e", "/");
    expect([visit.status, visit.headers.get("x-burrow-error")]).toEqual([404, "not-found"]);
    const allowing = new MemoryRelay({ ALLOW_PUNYCODE_NAMES: "true" });
    expect((await allowing.agent("xn--80ak6aa92e")).ready.name).toBe("xn--80ak6aa92e");
  });

  it("counts connection attempts per client address (CONNECTS_PER_MINUTE)", async () => {
    const relay = new MemoryRelay({ CONNECTS_PER_MINUTE: "2" });
    await relay.connect("one");
    await relay.connect("two");
    const third = await relay.fetch("/_burrow/connect?name=three", { headers: { upgrade: "websocket" } });
    expect([third.status, third.headers.get("x-burrow-error")]).toEqual([429, "rate-limited"]);
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(0);
    // Another address has its own count.
    await relay.connect("three", "198.51.100.1");
  });
});

describe("a relay with tokens (BURROW_TOKENS)", () => {
  it("refuses a wrong token with a Refused frame and close 4000, and a missing one with a hint", async () => {
    const relay = new MemoryRelay(TOKENS);
    const wrong = await relay.say("demo", { token: "not-a-token-of-this-relay" });
    expect(refusal(wrong.answer)).toMatchObject({
      code: "unauthorized",
      message: expect.stringMatching(/not one this relay was given/),
    });
    expect(wrong.link.closed?.code).toBe(CloseCode.Refused);
    expect(wrong.link.closed?.reason).toMatch(/^unauthorized: /);
    const none = await relay.say("demo");
    expect(refusal(none.answer).message).toMatch(/requires a token: pass --token-file/);
  });

  it("admits a listed token, and says the relay is not open", async () => {
    const relay = new MemoryRelay(TOKENS);
    const { ready } = await relay.agent("demo", { token: "alice-token-0001" });
    expect(ready).toMatchObject({ name: "demo", open: false });
  });

  it("keeps a token's name for that token: another token is refused while it is connected and after it stopped", async () => {
    const relay = new MemoryRelay(TOKENS);
    const alice = await relay.agent("demo", { token: "alice-token-0001" });
    const bob = await relay.say("demo", { token: "bob-token-0002" });
    expect(refusal(bob.answer)).toMatchObject({ code: "name-owned", message: 'the name "demo" belongs to another token' });
    alice.link.cut(CloseCode.Normal, "stopped");
    await relay.settled();
    expect(refusal((await relay.say("demo", { token: "bob-token-0002" })).answer).code).toBe("name-owned");
    // Alice's token has it back.
    await relay.agent("demo", { token: "alice-token-0001" });
  });

  it("refuses a token its tunnel past TUNNELS_PER_TOKEN, and counts it again once one stops", async () => {
    const relay = new MemoryRelay({ ...TOKENS, TUNNELS_PER_TOKEN: "1" });
    const first = await relay.agent("one", { token: "alice-token-0001" });
    const second = await relay.say("two", { token: "alice-token-0001" });
    expect(refusal(second.answer)).toMatchObject({ code: "too-many-tunnels", message: expect.stringContaining(": one") });
    first.link.cut(CloseCode.Normal, "stopped");
    await relay.settled();
    await relay.agent("two", { token: "alice-token-0001" });
  });

  it("refuses an HTTPS-transport session without a listed bearer token", async () => {
    const relay = new MemoryRelay(TOKENS);
    const response = await relay.fetch(`${SESSION_PATH}?name=demo`, {
      method: "POST",
      headers: { authorization: "Bearer wrong-token-000" },
    });
    expect([response.status, response.headers.get("x-burrow-error")]).toEqual([401, "unauthorized"]);
    const right = await relay.fetch(`${SESSION_PATH}?name=demo`, {
      method: "POST",
      headers: { authorization: "Bearer bob-token-0002" },
    });
    expect(right.status).toBe(201);
  });
});
