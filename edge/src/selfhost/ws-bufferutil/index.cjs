// ws's optional `bufferutil` module (mask and unmask), in JavaScript a 32-bit word at a time.
// Without bufferutil, ws (8.x) unmasks every frame a client sends with a loop of one byte per
// step: the self-hosted relay on Node unmasks every frame of every agent and `agent connect`,
// and that loop was 40-45% of its CPU per MB of a TCP tunnel's transfer (perf, Node 20). The
// real bufferutil is a native addon; the agent's package has no dependencies, so this file takes
// its name instead: a workspace package in a clone, an esbuild alias in the package's bundle
// (agent/scripts/bundle.js). ws calls it for payloads of 32 bytes and more (mask: 48).
"use strict";

/** Int32Array's byte order is the platform's; the words below assume little-endian (every target). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The 4 key bytes starting at key[phase], as one little-endian 32-bit word. */
function keyWord(key, phase) {
  return key[phase & 3] | (key[(phase + 1) & 3] << 8) | (key[(phase + 2) & 3] << 16) | (key[(phase + 3) & 3] << 24);
}

/**
 * XORs `length` bytes of `source` with the repeating 4-byte `key` into `output` from `offset`
 * (RFC 6455 5.3; `output` may be `source` itself, with offset 0).
 */
function xorInto(source, key, output, offset, length) {
  let i = 0;
  // Words need both sides at a multiple of 4 into their ArrayBuffer: bytes up to that point one by one.
  const sourceAt = source.byteOffset;
  const outputAt = output.byteOffset + offset;
  if (LITTLE_ENDIAN && (sourceAt & 3) === (outputAt & 3)) {
    const head = Math.min(length, (4 - (sourceAt & 3)) & 3);
    for (; i < head; i++) output[offset + i] = source[i] ^ key[i & 3];
    const words = (length - i) >>> 2;
    if (words > 0) {
      const word = keyWord(key, i);
      const from = new Int32Array(source.buffer, sourceAt + i, words);
      const to = new Int32Array(output.buffer, outputAt + i, words);
      for (let w = 0; w < words; w++) to[w] = from[w] ^ word;
      i += words * 4;
    }
  }
  for (; i < length; i++) output[offset + i] = source[i] ^ key[i & 3];
}

module.exports = {
  mask(source, key, output, offset, length) {
    xorInto(source, key, output, offset, length);
  },
  unmask(buffer, key) {
    xorInto(buffer, key, buffer, 0, buffer.length);
  },
};
