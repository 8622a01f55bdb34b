// MD4 (RFC 1320), for NTLM's password hash only. Node 20's OpenSSL 3 moved MD4 to its legacy
// provider, so createHash("md4") throws ERR_OSSL_EVP_UNSUPPORTED there (Bun and Deno have it);
// these 60 lines work on every runtime. Checked against RFC 1320's test suite and MS-NLMP 4.2.

const rotl = (x: number, n: number) => (x << n) | (x >>> (32 - n));

/** The MD4 digest (16 bytes) of `input`. */
export function md4(input: Uint8Array): Uint8Array {
  // Padding (RFC 1320 section 3.1-3.2): a 1 bit, zeros to 56 mod 64, the bit length (64-bit LE).
  const length = (((input.length + 8) >>> 6) + 1) << 6;
  const bytes = new Uint8Array(length);
  bytes.set(input);
  bytes[input.length] = 0x80;
  const view = new DataView(bytes.buffer);
  view.setUint32(length - 8, (input.length * 8) >>> 0, true);
  view.setUint32(length - 4, Math.floor(input.length / 0x20000000), true);
  let a = 0x67452301;
  let b = 0xefcdab89;
  let c = 0x98badcfe;
  let d = 0x10325476;
  const x = new Array<number>(16);
  for (let block = 0; block < length; block += 64) {
    for (let i = 0; i < 16; i++) x[i] = view.getUint32(block + i * 4, true);
    const [aa, bb, cc, dd] = [a, b, c, d];
    // Round 1: F(x,y,z) = xy v not(x)z, shifts 3 7 11 19.
    for (const i of [0, 4, 8, 12]) {
      a = rotl(a + ((b & c) | (~b & d)) + x[i]!, 3);
      d = rotl(d + ((a & b) | (~a & c)) + x[i + 1]!, 7);
      c = rotl(c + ((d & a) | (~d & b)) + x[i + 2]!, 11);
      b = rotl(b + ((c & d) | (~c & a)) + x[i + 3]!, 19);
    }
    // Round 2: G(x,y,z) = xy v xz v yz, plus 0x5a827999, shifts 3 5 9 13.
    for (const i of [0, 1, 2, 3]) {
      a = rotl(a + ((b & c) | (b & d) | (c & d)) + x[i]! + 0x5a827999, 3);
      d = rotl(d + ((a & b) | (a & c) | (b & c)) + x[i + 4]! + 0x5a827999, 5);
      c = rotl(c + ((d & a) | (d & b) | (a & b)) + x[i + 8]! + 0x5a827999, 9);
      b = rotl(b + ((c & d) | (c & a) | (d & a)) + x[i + 12]! + 0x5a827999, 13);
    }
    // Round 3: H(x,y,z) = x xor y xor z, plus 0x6ed9eba1, shifts 3 9 11 15.
    for (const i of [0, 2, 1, 3]) {
      a = rotl(a + (b ^ c ^ d) + x[i]! + 0x6ed9eba1, 3);
      d = rotl(d + (a ^ b ^ c) + x[i + 8]! + 0x6ed9eba1, 9);
      c = rotl(c + (d ^ a ^ b) + x[i + 4]! + 0x6ed9eba1, 11);
      b = rotl(b + (c ^ d ^ a) + x[i + 12]! + 0x6ed9eba1, 15);
    }
    a = (a + aa) | 0;
    b = (b + bb) | 0;
    c = (c + cc) | 0;
    d = (d + dd) | 0;
  }
  const out = new Uint8Array(16);
  const result = new DataView(out.buffer);
  for (const [i, word] of [a, b, c, d].entries()) result.setUint32(i * 4, word >>> 0, true);
  return out;
}
