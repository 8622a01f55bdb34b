import { describe, expect, it } from "vitest";
import { EdgeError } from "../../edge/src/errors.ts";
import { parseShard, pickShard, SHARDS_TTL_MS, ShardMap, shardObjectName } from "../../edge/src/shards.ts";

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

  it("forgets what it learnt after SHARDS_TTL_MS, and stays bounded", () => {
    const map = new ShardMap(2);
    map.set("a", [0, 1], 1000);
    expect(map.get("a", 1000 + SHARDS_TTL_MS - 1)).toEqual([0, 1]);
    expect(map.get("a", 1000 + SHARDS_TTL_MS)).toBeUndefined();
    map.set("b", [0], 1000);
    map.set("c", [0], 1000);
    expect(map.get("c", 1000)).toEqual([0]);
    expect(map.get("a", 1000)).toBeUndefined();
  });
});
