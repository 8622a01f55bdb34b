import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, tunnelArgs } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Relay } from "../_relay.ts";
import { ask, githubSignature, Trickler } from "../_trickle.ts";

// fast-check against the relay on plain workerd (like fuzz.test.ts): visitors that trickle
// their bodies at random rates and sizes, from their own loopback addresses, never lock a
// tunnel's other visitors out (the fixed cases are in slots.test.ts).

describe("a tunnel under visitors who trickle their bodies", () => {
  const SECRET = "fuzz-secret";
  let relay: Relay;
  let origin: Origin;
  let hooks: AgentProcess;
  let plain: AgentProcess;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      // Plain workerd: it sees each visitor's own address (127.0.0.x).
      Relay.start({
        launcher: "workerd",
        vars: {
          MAX_STREAMS_PER_TUNNEL: "8",
          MAX_STREAMS_PER_VISITOR: "3",
          MAX_SIGNED_BODIES: "8",
          MAX_SIGNED_BODY_BYTES: "16384",
          SIGNED_BODY_SECONDS: "8",
          MIN_SIGNED_BODY_BYTES_PER_SECOND: "1024",
        },
      }),
      Origin.start(),
    ]);
    [hooks, plain] = await Promise.all([
      AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "hooks"), "--verify-webhook", `github:${SECRET}`]),
      AgentProcess.start("node", tunnelArgs(origin.port, relay, "plain")),
    ]);
  });

  afterAll(async () => {
    await hooks?.stop("SIGINT");
    await plain?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("never locks out a signed delivery nor another address, whatever the rates and sizes", async () => {
    const wrong = githubSignature(new Uint8Array([1]), SECRET);
    // Two addresses, each with a share of 3 of the 8 streams and 8 bodies in check: together
    // they can hold 6 of each, never all.
    const trickler = fc.record({
      from: fc.constantFrom("127.0.0.10", "127.0.0.11"),
      chunk: fc.integer({ min: 1, max: 2048 }),
      everyMs: fc.integer({ min: 100, max: 1000 }),
      chunks: fc.integer({ min: 3, max: 40 }),
      declared: fc.boolean(),
    });
    // More than the tunnel's streams, all on one tunnel: enough to hold every slot of it if
    // nothing stopped them (before visitors had shares, they did).
    const plan = fc.record({ signed: fc.boolean(), tricklers: fc.array(trickler, { minLength: 9, maxLength: 14 }) });
    const payload = Buffer.from('{"action":"opened"}');
    const signature = githubSignature(payload, SECRET);
    /** A correctly signed delivery and another address's visit both get through. */
    const othersGetThrough = async () => {
      const [delivery, visit] = await Promise.all([
        ask(`http://hooks.localhost:${relay.port}/echo`, "127.0.0.20", {
          method: "POST",
          body: payload,
          headers: { "x-hub-signature-256": signature },
        }),
        ask(`http://plain.localhost:${relay.port}/echo`, "127.0.0.21"),
      ]);
      return [`${delivery.status} ${delivery.code ?? ""}`, `${visit.status} ${visit.code ?? ""}`];
    };
    const unexpected: string[] = [];
    await fc.assert(
      fc.asyncProperty(plan, async ({ signed, tricklers: plans }) => {
        const tricklers = plans.map(
          (t) =>
            new Trickler(`http://${signed ? "hooks" : "plain"}.localhost:${relay.port}/echo`, {
              from: t.from,
              headers: signed ? { "x-hub-signature-256": wrong } : {},
              chunk: t.chunk,
              // Every trickler's body ends within 6 s, so that every one is answered and a run ends.
              everyMs: Math.min(t.everyMs, Math.floor(6000 / t.chunks)),
              total: t.chunk * t.chunks,
              declared: t.declared,
            }),
        );
        let answered = 0;
        const waiting: [number, () => void][] = [];
        const answeredBy = (count: number) =>
          new Promise<void>((resolve) => (answered >= count ? resolve() : waiting.push([count, resolve])));
        for (const t of tricklers) {
          const done = () => {
            answered++;
            for (const [count, resolve] of waiting) if (answered >= count) resolve();
          };
          t.answer.then(done, done);
        }
        try {
          await Promise.all(tricklers.map((t) => t.started));
          // While they all trickle, once the first was answered, once half of them were, and at
          // the end: the ones still trickling are by then the slowest, the longest or the largest.
          const checks = [await othersGetThrough()];
          for (const count of [1, Math.ceil(tricklers.length / 2), tricklers.length]) {
            await answeredBy(count);
            checks.push(await othersGetThrough());
          }
          for (const check of checks)
            if (check.join() !== "200 ,200 ") unexpected.push(`${check.join(" / ")} with ${JSON.stringify({ signed, plans })}`);
        } finally {
          for (const t of tricklers) t.stop();
        }
        // The tricklers themselves: answered by the origin, by the rules, or by a limit, never a relay error.
        for (const answer of await Promise.allSettled(tricklers.map((t) => t.answer))) {
          if (answer.status === "rejected") {
            unexpected.push(`a trickler got no answer: ${answer.reason}`);
            continue;
          }
          const { status, code } = answer.value;
          if (
            !["200 ", "401 unauthorized", "408 body-too-slow", "413 body-too-large", "503 too-many-from-address"].includes(
              `${status} ${code ?? ""}`,
            )
          ) {
            unexpected.push(`a trickler got ${status} ${code}`);
          }
        }
      }),
      { numRuns: 10 },
    );
    expect(unexpected).toEqual([]);
    expect(relay.output).not.toMatch(/relay error|fetch failed/);
  }, 300_000);
});
