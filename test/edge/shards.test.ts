import { describe, expect, it } from "vitest";
import { EdgeError } from "../../edge/src/core/errors.ts";
import { parseLiveShards, parseShard, pickShard, SHARDS_TTL_MS, ShardMap, shardObjectName } from "../../edge/src/core/shards.ts";

// The Worker's side of `--connections`, runtime-free (the end-to-end behaviour is in
// test/e2e/shards.test.ts).

describe("shards", () => {
  it("names shard 0 after the tunnel, and the others apart from any tunnel name", () => {
    expect(shardObjectName("demo", 0)).toBe("demo");
    expect(shardObjectName("demo", 3)).toBe("demo#3");
  });

  it("reads a connect URL's shard: absent is 0, and only 0 to 15 in plain digits", () => {
    expect(parseShard(undefined)).toBe(0);
    expect(parseShard("0")).toBe(0);
    expect(parseShard("15")).toBe(15);
    for (const bad of ["16", "99", "-1", "1.0", "1e1", " 1", "", "x", "007"]) {
      expect(() => parseShard(bad), bad).toThrow(EdgeError);
    }
  });

  it("sends visitors to a live shard at random, and to shard 0 when none is live", () => {
    expect(pickShard([])).toBe(0);
    expect(pickShard([2])).toBe(2);
    expect(pickShard([0, 1, 2], () => 0)).toBe(0);
    expect(pickShard([0, 1, 2], () => 0.99)).toBe(2);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3000; i++) counts[pickShard([0, 1, 2])]!++;
    for (const count of counts) expect(count).toBeGreaterThan(800);
  });

  it("asks shard 0 for a tunnel it never saw, then spreads, and asks once when the list is stale", () => {
    const map = new ShardMap(2);
    // Never seen: every visit goes to shard 0 and asks, until an answer comes.
    expect(map.route("a", 1000)).toEqual({ shard: 0, asks: true });
    expect(map.route("a", 1000)).toEqual({ shard: 0, asks: true });
    map.set("a", [1, 2], 1000);
    expect(map.route("a", 1000 + SHARDS_TTL_MS - 1, () => 0.99)).toEqual({ shard: 2, asks: false });
    // Stale: one visit asks, the others go on using the list meanwhile.
    expect(map.route("a", 1000 + SHARDS_TTL_MS, () => 0)).toEqual({ shard: 0, asks: true });
    expect(map.route("a", 1000 + SHARDS_TTL_MS + 1, () => 0)).toEqual({ shard: 1, asks: false });
    // That answer never came: asked again a TTL later.
    expect(map.route("a", 1000 + 2 * SHARDS_TTL_MS, () => 0)).toEqual({ shard: 0, asks: true });
    map.set("a", [0], 1000 + 2 * SHARDS_TTL_MS);
    expect(map.route("a", 1000 + 2 * SHARDS_TTL_MS)).toEqual({ shard: 0, asks: false });
  });

  it("stays bounded", () => {
    const map = new ShardMap(2);
    map.set("a", [0, 1], 1000);
    map.set("b", [0], 1000);
    map.set("c", [0, 3], 1000);
    expect(map.route("c", 1000, () => 0.99)).toEqual({ shard: 3, asks: false });
    expect(map.route("a", 1000)).toEqual({ shard: 0, asks: true });
  });

  it("reads shard 0's list of live shards, and nothing else", () => {
    expect(parseLiveShards("0,2,15")).toEqual([0, 2, 15]);
    expect(parseLiveShards("")).toEqual([]);
    expect(parseLiveShards(null)).toBeUndefined();
    for (const bad of ["16", "0,,1", "1 ,2", "-1", "a", "0,1,", "007"]) expect(parseLiveShards(bad), bad).toBeUndefined();
  });
});
