// ws's masking helpers as the relay and the agent's visitor sockets load them: our `bufferutil`
// (edge/src/selfhost/ws-bufferutil), a 32-bit word at a time, must give the bytes RFC 6455's
// byte-by-byte XOR gives for every length and every alignment of its buffers, and ws must find
// it (a clone resolves it as a workspace package; the package's bundle aliases it).
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../_relay.ts";

const require = createRequire(import.meta.url);
const bufferUtil = require(join(ROOT, "edge/src/selfhost/ws-bufferutil/index.cjs")) as {
  mask(source: Uint8Array, key: Uint8Array, output: Uint8Array, offset: number, length: number): void;
  unmask(buffer: Uint8Array, key: Uint8Array): void;
};

/** RFC 6455 5.3: octet i of the payload XOR octet i mod 4 of the key. */
function reference(source: Uint8Array, key: Uint8Array): Uint8Array {
  return source.map((byte, i) => byte ^ key[i & 3]!);
}

const LENGTHS = [0, 1, 3, 4, 5, 31, 32, 33, 48, 127, 1024 + 3, 65536 + 7];

describe("ws's bufferutil (ours)", () => {
  it("unmasks in place like the byte loop, at every alignment of the buffer", () => {
    for (const length of LENGTHS) {
      for (let at = 0; at < 8; at++) {
        const key = randomBytes(4);
        const buffer = randomBytes(length + at).subarray(at);
        const expected = reference(buffer, key);
        bufferUtil.unmask(buffer, key);
        expect(Buffer.from(buffer).equals(Buffer.from(expected)), `length ${length} at ${at}`).toBe(true);
      }
    }
  });

  it("masks into another buffer at an offset like the byte loop, aligned alike or not, leaving the rest", () => {
    for (const length of LENGTHS) {
      for (let from = 0; from < 4; from++) {
        for (let to = 0; to < 4; to++) {
          const key = randomBytes(4);
          const source = randomBytes(length + from).subarray(from);
          const output = randomBytes(length + 14 + to).subarray(to);
          const before = Buffer.from(output);
          bufferUtil.mask(source, key, output, 10, length);
          expect(Buffer.from(output.subarray(10, 10 + length)).equals(Buffer.from(reference(source, key)))).toBe(true);
          expect(Buffer.from(output.subarray(0, 10)).equals(before.subarray(0, 10))).toBe(true);
          expect(Buffer.from(output.subarray(10 + length)).equals(before.subarray(10 + length))).toBe(true);
          // The source is untouched.
          expect(Buffer.from(source).equals(Buffer.from(reference(reference(source, key), key)))).toBe(true);
        }
      }
    }
  });

  it("is what the relay's and the agent's ws load", () => {
    for (const pkg of ["edge", "agent"]) {
      const ws = dirname(createRequire(join(ROOT, pkg, "package.json")).resolve("ws/package.json"));
      const resolved = createRequire(join(ws, "lib/buffer-util.js")).resolve("bufferutil");
      expect(resolved, pkg).toBe(join(ROOT, "edge/src/selfhost/ws-bufferutil/index.cjs"));
    }
  });
});
