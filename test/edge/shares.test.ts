import { describe, expect, it } from "vitest";
import { visitorKey } from "../../edge/src/core/cidr.ts";
import { readSettings } from "../../edge/src/core/settings.ts";
import { Tally } from "../../edge/src/core/shares.ts";

// Whom a visitor counts as, and how big its share is, runtime-free (the behaviour against the
// real relay is in slots.test.ts).

describe("visitor shares", () => {
  it("counts an IPv4 address alone and an IPv6 address by its /64", () => {
    expect(visitorKey("203.0.113.7")).toBe("203.0.113.7");
    expect(visitorKey("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(visitorKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(visitorKey("2001:db8:1:2:ffff:ffff:ffff:ffff")).toBe(visitorKey("2001:db8:1:2::9"));
    expect(visitorKey("2001:db8:1:3::1")).not.toBe(visitorKey("2001:db8:1:2::1"));
    expect(visitorKey(null)).toBeUndefined();
    expect(visitorKey("")).toBeUndefined();
  });

  it("gives each visitor a quarter of the streams, at least 6 and never more than all of them", () => {
    const share = (vars: Record<string, string>) => {
      const limits = readSettings(vars).settings;
      return [limits.maxStreamsPerVisitor, limits.maxSignedBodies, limits.maxSignedBodiesPerVisitor];
    };
    expect(share({})).toEqual([25, 100, 25]);
    expect(share({ MAX_STREAMS_PER_TUNNEL: "400" })).toEqual([100, 400, 100]);
    expect(share({ MAX_STREAMS_PER_TUNNEL: "12" })).toEqual([6, 12, 6]);
    expect(share({ MAX_STREAMS_PER_TUNNEL: "3" })).toEqual([3, 3, 3]);
    expect(share({ MAX_STREAMS_PER_TUNNEL: "8", MAX_STREAMS_PER_VISITOR: "3", MAX_SIGNED_BODIES: "2" })).toEqual([3, 2, 2]);
    expect(share({ MAX_SIGNED_BODIES: "40" })).toEqual([25, 40, 10]);
    // One rule for bad values, as for every limit: the default.
    for (const bad of ["0", "-1", "many", "", "Infinity"]) expect(share({ MAX_STREAMS_PER_VISITOR: bad })[0], bad).toBe(25);
    const { settings, problems } = readSettings({ SIGNED_BODY_SECONDS: "x", MIN_SIGNED_BODY_BYTES_PER_SECOND: "-5" });
    expect(settings).toMatchObject({ signedBodyTimeoutMs: 30_000, minSignedBodyRate: 16 * 1024 });
    expect(problems).toEqual([
      'SIGNED_BODY_SECONDS="x" is not a number above 0; using the default, 30',
      'MIN_SIGNED_BODY_BYTES_PER_SECOND="-5" is not a whole number above 0; using the default, 16384',
    ]);
  });

  it("tallies what each visitor holds and forgets a visitor who holds nothing", () => {
    const tally = new Tally();
    tally.add("a");
    tally.add("a");
    tally.add(undefined);
    expect([tally.total, tally.of("a"), tally.of(undefined)]).toEqual([3, 2, 0]);
    tally.remove("a");
    tally.remove("a");
    tally.remove("a");
    expect([tally.total, tally.of("a")]).toEqual([1, 0]);
  });
});
