import { isPunycodeName, RESERVED_NAMES, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { ADJECTIVES, ANIMALS, randomName, SUFFIX_ALPHABET, SUFFIX_LENGTH } from "../../agent/src/names.ts";
import { checkCidr } from "../../agent/src/rules.ts";

describe("random tunnel names", () => {
  it("hold at least 40 bits of entropy, from distinct words and an alphabet without look-alikes", () => {
    expect(new Set(ADJECTIVES).size).toBe(ADJECTIVES.length);
    expect(new Set(ANIMALS).size).toBe(ANIMALS.length);
    expect(new Set(SUFFIX_ALPHABET).size).toBe(SUFFIX_ALPHABET.length);
    expect(SUFFIX_ALPHABET).not.toMatch(/[ilou]/);
    const bits = Math.log2(ADJECTIVES.length) + Math.log2(ANIMALS.length) + SUFFIX_LENGTH * Math.log2(SUFFIX_ALPHABET.length);
    expect(bits).toBeGreaterThanOrEqual(40);
  });

  it("are 10,000 valid DNS labels, none reserved nor punycode, without repeats", () => {
    const names = Array.from({ length: 10_000 }, randomName);
    for (const name of names) {
      expect(name).toMatch(TUNNEL_NAME_PATTERN);
      expect(RESERVED_NAMES.has(name)).toBe(false);
      expect(isPunycodeName(name)).toBe(false);
    }
    expect(new Set(names).size).toBe(names.length);
  });
});

describe("--allow-ip", () => {
  it("takes IPv4 and IPv6 addresses with or without a prefix, and names the bad value otherwise", () => {
    expect(["10.0.0.0/8", "203.0.113.7", "::1", "2001:DB8::/32"].map(checkCidr)).toEqual([
      "10.0.0.0/8",
      "203.0.113.7",
      "::1",
      "2001:db8::/32",
    ]);
    for (const bad of ["10.0.0.01", "10.0.0.0/33", "::1/129", "fe80::1%eth0", "10.0.0.0/8/8", "example.com", "", "1.2.3.4/08"]) {
      expect(() => checkCidr(bad)).toThrow(`--allow-ip ${JSON.stringify(bad)} is not an address range`);
    }
  });
});
