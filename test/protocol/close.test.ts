import { closeReason, MAX_CLOSE_REASON_BYTES, randomId } from "@burrow/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

const bytes = (text: string) => new TextEncoder().encode(text).byteLength;

describe("closeReason", () => {
  const cases: [string, string, string][] = [
    ["a short reason, as it is", "going away", "going away"],
    ["123 bytes of ASCII, whole", "a".repeat(123), "a".repeat(123)],
    ["124 bytes of ASCII, cut to 120 and marked", "a".repeat(124), `${"a".repeat(120)}...`],
    ["2-byte characters, never split", "é".repeat(62), `${"é".repeat(60)}...`],
    ["3-byte characters, never split", "語".repeat(42), `${"語".repeat(40)}...`],
    ["41 3-byte characters, whole (123 bytes)", "語".repeat(41), "語".repeat(41)],
    // 119 bytes of ASCII, then an emoji (4 bytes) that would end at byte 123: it does not fit
    // beside the mark, and its two UTF-16 halves stay together.
    ["an emoji across the cut, left out whole", `${"a".repeat(119)}😀😀`, `${"a".repeat(119)}...`],
    ["an emoji that fits, whole", `${"a".repeat(116)}😀${"a".repeat(10)}`, `${"a".repeat(116)}😀...`],
    // A lone surrogate is written as U+FFFD, 3 bytes, by every encoder.
    ["lone surrogates, counted as 3 bytes each", "\ud800".repeat(41), "\ud800".repeat(41)],
    ["lone surrogates past the limit, cut", `\udc00${"\ud800".repeat(41)}`, `${"\udc00"}${"\ud800".repeat(39)}...`],
    ["a high surrogate ending the text, alone", `${"a".repeat(130)}\ud83d`, `${"a".repeat(120)}...`],
  ];
  for (const [name, reason, expected] of cases) {
    it(`keeps ${name}`, () => {
      expect(closeReason(reason)).toBe(expected);
      expect(bytes(closeReason(reason))).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
    });
  }

  it("fits any text in 123 bytes of UTF-8, as a prefix of it, whole when it already fits", () => {
    fc.assert(
      fc.property(
        fc.string({
          unit: fc.oneof(
            fc.constant("a"),
            fc.constant("é"),
            fc.constant("語"),
            fc.constant("😀"),
            fc.constant("\ud800"),
            fc.constant("\udfff"),
          ),
          maxLength: 200,
        }),
        (reason) => {
          const cut = closeReason(reason);
          expect(bytes(cut)).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
          if (bytes(reason) <= MAX_CLOSE_REASON_BYTES) {
            expect(cut).toBe(reason);
          } else {
            expect(cut.endsWith("...")).toBe(true);
            const kept = cut.slice(0, -3);
            expect(reason.startsWith(kept)).toBe(true);
            // Cut at a character: the next unit is not the second half of a pair it kept the first of.
            expect(/[\ud800-\udbff]$/.test(kept) && /^[\udc00-\udfff]/.test(reason.slice(kept.length))).toBe(false);
            // And as long as it can be: one more character would not fit beside the mark.
            const next = reason.codePointAt(kept.length)!;
            expect(bytes(kept) + bytes(String.fromCodePoint(next)) + 3).toBeGreaterThan(MAX_CLOSE_REASON_BYTES);
          }
        },
      ),
    );
  });
});

describe("randomId", () => {
  it("is 128 bits of URL-safe base64 unless told otherwise, and never the same twice", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => randomId()));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(randomId(24)).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });
});
