import { createCipheriv, createHash } from "node:crypto";

/**
 * Test bytes, served by the origin at /bytes/<n>: pseudo-random (an AES-CTR keystream, as
 * incompressible as random bytes) and the same in every process, so an origin running in a
 * child process (test/_origin-main.ts) serves the bytes the test expects.
 */
const BLOB = createCipheriv("aes-128-ctr", Buffer.alloc(16, 7), Buffer.alloc(16)).update(Buffer.alloc(50 * 1024 * 1024));

export function blob(size: number): Buffer {
  return BLOB.subarray(0, size);
}

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Bytes i to i+size of the repeating test pattern (BLOB, over and over), for any size. */
export function* pattern(size: number, chunk = 1 << 20): Generator<Buffer> {
  for (let offset = 0; offset < size; ) {
    const start = offset % BLOB.length;
    const length = Math.min(chunk, size - offset, BLOB.length - start);
    yield BLOB.subarray(start, start + length);
    offset += length;
  }
}

/** sha256 of `pattern(size)`. */
export function patternHash(size: number): string {
  const hash = createHash("sha256");
  for (const chunk of pattern(size)) hash.update(chunk);
  return hash.digest("hex");
}
