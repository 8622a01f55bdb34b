// A tunnel's name and rules after its agent leaves: kept for it while it may come back, the
// rules deleted by the alarm once RESUME_SECONDS have passed, the name once NAME_TTL_DAYS have.
// The core reads Date.now(): the tests move the clock (Date only; timers stay real) and fire
// the alarm as the host would.
import { CloseCode, FrameType } from "@burrow/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryRelay, NO_RULES, tick } from "./_host.ts";

const TOKENS = { BURROW_TOKENS: "alice:alice-token-0001,bob:bob-token-0002" };
const ALICE = { token: "alice-token-0001" };
const BOB = { token: "bob-token-0002" };
const DAY = 86_400_000;

/** Moves the core's clock to `at` (ms since the epoch). */
function clock(at: number): void {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(at);
}

afterEach(() => {
  vi.useRealTimers();
});

interface NameRecord {
  owner: string;
  lastUsed: number;
  connected: boolean;
  dropped?: boolean;
}

describe("a name's lease", () => {
  it("moves the name's last use forward while its agent is connected, each time the alarm fires", async () => {
    const relay = new MemoryRelay(TOKENS);
    await relay.agent("demo", ALICE);
    const tunnel = relay.object("demo");
    const connectedAt = (await tunnel.storage.get<NameRecord>("name"))!.lastUsed;
    expect(tunnel.storage.alarm).toBeGreaterThanOrEqual(connectedAt + DAY);
    clock(connectedAt + DAY);
    await tunnel.fireAlarm();
    expect(await tunnel.storage.get("name")).toMatchObject({ lastUsed: connectedAt + DAY, connected: true });
    expect(tunnel.storage.alarm).toBe(connectedAt + 2 * DAY);
  });

  it("keeps a cut agent's rules until RESUME_SECONDS have passed, then the alarm deletes them; the name lapses after NAME_TTL_DAYS", async () => {
    const relay = new MemoryRelay({ ...TOKENS, RESUME_SECONDS: "0.1", NAME_TTL_DAYS: "2" });
    const alice = await relay.agent("demo", { ...ALICE, rules: { ...NO_RULES, allowIp: ["198.51.100.0/24"] } });
    const tunnel = relay.object("demo");
    expect(await tunnel.storage.get("rules")).toMatchObject({ allowIp: ["198.51.100.0/24"] });
    alice.link.cut(1006);
    await tick(150); // the session waits RESUME_SECONDS (real timers), then ends
    await relay.settled();
    const record = (await tunnel.storage.get<NameRecord>("name"))!;
    expect(record).toMatchObject({ connected: false, dropped: true });
    expect(tunnel.storage.alarm).toBe(record.lastUsed + 100 + 1000);

    // Fired early (a host may), the alarm keeps the rules and comes back.
    clock(record.lastUsed + 50);
    await tunnel.fireAlarm();
    expect(await tunnel.storage.get("rules")).toBeDefined();
    expect(tunnel.storage.alarm).toBe(record.lastUsed + 1100);
    // Meanwhile the rules still hold visitors off.
    expect((await relay.visit("demo", "/", {}, "203.0.113.9")).headers.get("x-burrow-error")).toBe("forbidden");

    clock(record.lastUsed + 1100);
    await tunnel.fireAlarm();
    expect(await tunnel.storage.get("rules")).toBeUndefined();
    expect(await tunnel.storage.get("name")).toMatchObject({ owner: record.owner });
    expect(tunnel.storage.alarm).toBe(record.lastUsed + 2 * DAY);
    expect((await relay.say("demo", BOB)).answer).toMatchObject({ type: FrameType.Refused, code: "name-owned" });
    // Visitors are no longer checked against them (and, past AGENT_RETURN_WAIT_MS, wait for nobody).
    clock(record.lastUsed + DAY);
    expect((await relay.visit("demo", "/", {}, "203.0.113.9")).headers.get("x-burrow-error")).toBe("agent-offline");

    clock(record.lastUsed + 2 * DAY);
    await tunnel.fireAlarm();
    expect(tunnel.storage.empty).toBe(true); // no value, no alarm
    await relay.agent("demo", BOB);
  });

  it("keeps an open relay's name for a cut agent's claim for a minute, and frees it at once after a clean stop", async () => {
    const relay = new MemoryRelay();
    const cut = await relay.agent("demo");
    cut.link.cut(1006);
    await relay.settled();
    const other = await relay.say("demo", { claim: "another-claim-0123456789" });
    expect(other.answer).toMatchObject({
      code: "name-taken",
      message: expect.stringMatching(/kept for its agent for \d+s more/),
    });
    clock(Date.now() + 61_000);
    await relay.agent("demo", { claim: "another-claim-0123456789" });
    vi.useRealTimers();

    const stopped = await relay.agent("clean");
    stopped.link.cut(CloseCode.Normal, "stopped");
    await relay.settled();
    expect(await relay.object("clean").storage.get("name")).toBeUndefined();
    await relay.agent("clean", { claim: "another-claim-0123456789" });
  });

  it("counts a name whose agent was connected when the relay restarted as dropped: kept for its token, visitors wait for it", async () => {
    const before = new MemoryRelay(TOKENS);
    await before.agent("demo", ALICE);
    const relay = before.restarted();
    const tunnel = relay.object("demo");
    await tunnel.ready;
    const record = (await tunnel.storage.get<NameRecord>("name"))!;
    expect(record).toMatchObject({ connected: false, dropped: true });
    expect(tunnel.storage.alarm).toBe(record.lastUsed + 30_000 + 1000);
    expect((await relay.say("demo", BOB)).answer).toMatchObject({ code: "name-owned" });
    const response = relay.visit("demo", "/back");
    await tick(10);
    const alice = await relay.agent("demo", ALICE);
    const head = await alice.link.nextOf(FrameType.RequestHead);
    expect(head.path).toBe("/back");
    await alice.link.deliver({ type: FrameType.ResponseHead, stream: head.stream, status: 204, headers: [] });
    expect((await response).status).toBe(204);
  });
});
