import { isPunycodeName, RESERVED_NAMES, randomId, TUNNEL_NAME_PATTERN } from "@burrow/protocol";

export const ADJECTIVES = [
  "amber",
  "brave",
  "calm",
  "clever",
  "cosy",
  "crisp",
  "eager",
  "fuzzy",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "lucky",
  "mellow",
  "merry",
  "nimble",
  "plucky",
  "quick",
  "quiet",
  "rapid",
  "shiny",
  "snug",
  "sunny",
  "swift",
  "tidy",
  "vivid",
  "warm",
  "witty",
  "zesty",
  "bold",
];
export const ANIMALS = [
  "badger",
  "beaver",
  "bunny",
  "ferret",
  "fox",
  "gopher",
  "hare",
  "hedgehog",
  "marmot",
  "meerkat",
  "mole",
  "otter",
  "prairie-dog",
  "rabbit",
  "shrew",
  "squirrel",
  "vole",
  "weasel",
  "wombat",
  "chipmunk",
];

/**
 * Crockford's base32 alphabet, lowercase: no i, l, o or u, so a name read aloud or off a
 * screen is not mistaken for another.
 */
export const SUFFIX_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/**
 * 7 characters of 5 bits: with the two words (about 9 bits) a name holds over 44 bits, so on
 * an open relay a name is not guessed by walking a short list (issue 10).
 */
export const SUFFIX_LENGTH = 7;

/** An unbiased random index below `n` (rejection sampling over 32-bit values). */
function randomIndex(n: number): number {
  const limit = 2 ** 32 - (2 ** 32 % n);
  for (;;) {
    const value = crypto.getRandomValues(new Uint32Array(1))[0]!;
    if (value < limit) return value % n;
  }
}

function pick<T>(items: readonly T[]): T {
  return items[randomIndex(items.length)]!;
}

/**
 * A readable tunnel name such as `plucky-wombat-7k3m9qd`: a valid DNS label, never a reserved
 * one nor a punycode one (which relays refuse by default), the protocol's rules for any name.
 */
export function randomName(): string {
  for (;;) {
    let suffix = "";
    for (let i = 0; i < SUFFIX_LENGTH; i++) suffix += SUFFIX_ALPHABET[randomIndex(SUFFIX_ALPHABET.length)];
    const name = `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${suffix}`;
    if (TUNNEL_NAME_PATTERN.test(name) && !RESERVED_NAMES.has(name) && !isPunycodeName(name)) return name;
  }
}

/** A fresh secret that lets an agent take its name back after a reconnect (see claims.ts). */
export function randomClaim(): string {
  return randomId(24);
}
