// Secrets both sides handle the same way. Web Crypto is in every runtime the protocol runs in
// (workerd, Node 20, Bun, Deno); see web.d.ts for what this package declares of it.

const encoder = new TextEncoder();

/**
 * What an agent sends the relay for `--basic-auth user:password`, and what the relay computes
 * from a visitor's `Authorization: Basic` header to compare: SHA-256 over the tunnel name and
 * the credentials, hex. The relay never sees a password; the name salts the hash so that one
 * password gives different hashes on different tunnels.
 */
export async function hashBasicCredentials(tunnel: string, user: string, password: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    encoder.encode(`burrow-basic-auth\u0000${tunnel}\u0000${user}:${password}`),
  );
  return toHex(new Uint8Array(digest));
}

/**
 * What an agent sends the relay for each key of a TCP tunnel (`--connect-key-file`), and what
 * the relay computes from a visitor's Connect to compare: SHA-256 over the tunnel name and the
 * key, hex. The relay stores and compares hashes only; the name salts them per tunnel.
 */
export async function hashConnectKey(tunnel: string, key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(`burrow-connect-key\u0000${tunnel}\u0000${key}`));
  return toHex(new Uint8Array(digest));
}

/**
 * Compares two byte strings in time that depends on their length only, in plain JavaScript (not
 * workerd's `crypto.subtle.timingSafeEqual`, so it runs on any runtime). Callers compare
 * fixed-length digests, so the length says nothing.
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * A fresh random id that nobody can guess: `bytes` random bytes (16 by default, 128 bits) from
 * the runtime's CSPRNG, as URL-safe base64 without padding (RFC 4648 section 5), so it goes in
 * a path, a query or a cookie as it is. For session ids, connection ids, an agent's claim.
 */
export function randomId(bytes = 16): string {
  const random = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...random))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");
}

function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}
