// Proxy-Authenticate as RFC 9110 section 11.6.1 writes it:
//   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//   auth-param = token BWS "=" BWS ( token / quoted-string )
// One field may carry several challenges separated by commas, and a proxy may also send the
// field several times: each value is parsed on its own (joining them with ", " would be
// ambiguous only for broken input, but the values are kept apart anyway, as Digest's params
// contain commas inside quoted strings). The input is the proxy's: parsing never throws, and
// what cannot be read is skipped.
import type { Challenge } from "./scheme.ts";

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*/;

/** Every challenge of every `Proxy-Authenticate` value, in order. */
export function parseChallenges(values: readonly string[]): Challenge[] {
  return values.flatMap((value) => parseField(value));
}

function parseField(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  let at = 0;
  const skipSpace = () => {
    while (at < text.length && (text[at] === " " || text[at] === "\t")) at++;
  };
  const token = (): string => {
    const start = at;
    while (at < text.length && TCHAR.test(text[at]!)) at++;
    return text.slice(start, at);
  };
  /** Whether a `token BWS "="` (an auth-param) starts at `at`. */
  const paramAhead = (): boolean => {
    const start = at;
    const name = token();
    skipSpace();
    const found = name.length > 0 && text[at] === "=";
    at = start;
    return found;
  };
  const value = (): string => {
    if (text[at] !== '"') return token();
    at++;
    let out = "";
    while (at < text.length && text[at] !== '"') {
      if (text[at] === "\\" && at + 1 < text.length) at++;
      out += text[at++];
    }
    at++; // the closing quote (or the end of an unterminated string)
    return out;
  };
  while (at < text.length) {
    skipSpace();
    if (text[at] === ",") {
      at++;
      continue;
    }
    const scheme = token();
    if (!scheme) {
      at++; // not a challenge: skip the character
      continue;
    }
    const challenge: Challenge = { scheme, name: scheme.toLowerCase(), params: new Map() };
    challenges.push(challenge);
    skipSpace();
    const token68 = TOKEN68.exec(text.slice(at))?.[0];
    if (token68) {
      const after = text.slice(at + token68.length).trimStart();
      if (after === "" || after.startsWith(",")) {
        challenge.token = token68;
        at += token68.length;
        continue;
      }
    }
    // auth-params, until a comma is followed by something that is not one (the next challenge)
    for (;;) {
      skipSpace();
      if (!paramAhead()) break;
      const name = token().toLowerCase();
      skipSpace();
      at++; // "="
      skipSpace();
      const read = value();
      if (!challenge.params.has(name)) challenge.params.set(name, read);
      skipSpace();
      if (text[at] !== ",") break;
      const comma = at;
      while (text[at] === "," || text[at] === " " || text[at] === "\t") at++;
      if (!paramAhead()) {
        at = comma;
        break;
      }
    }
    // Whatever else is there up to the next comma is not understood: skip it.
    while (at < text.length && text[at] !== ",") {
      if (text[at] === '"') value();
      else at++;
    }
  }
  return challenges;
}

/** A header value with `text` as a quoted-string (RFC 9110 section 5.6.4). */
export function quote(text: string): string {
  return `"${text.replace(/["\\]/g, "\\$&")}"`;
}
