const ADJECTIVES = [
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
const ANIMALS = [
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

function pick<T>(items: readonly T[]): T {
  return items[crypto.getRandomValues(new Uint32Array(1))[0]! % items.length]!;
}

/** A readable tunnel name such as `plucky-wombat-4821` (a valid DNS label). */
export function randomName(): string {
  const digits = String(1000 + (crypto.getRandomValues(new Uint32Array(1))[0]! % 9000));
  return `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${digits}`;
}

/** A secret that lets this agent process take its name back after a reconnect. */
export function randomClaim(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return btoa(String.fromCharCode(...bytes));
}
