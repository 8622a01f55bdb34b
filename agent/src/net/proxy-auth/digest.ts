// Digest (RFC 7616) for CONNECT: MD5, MD5-sess, SHA-256 and SHA-256-sess, qop=auth with a cnonce
// from the CSPRNG and a nonce count, and RFC 2069's form for proxies that offer no qop. The
// `uri` of a CONNECT is its authority, `host:443` (RFC 9112 section 3.2.3), as curl sends it.
import { createHash, randomBytes } from "node:crypto";
import { needsCredentials } from "./basic.ts";
import { quote } from "./challenge.ts";
import { type Challenge, type ProxyAuthScheme, SchemeUnavailable } from "./scheme.ts";

const ALGORITHMS: Record<string, string> = { md5: "md5", "sha-256": "sha256" };

/** What one Digest answer is computed from (RFC 7616 section 3.4). */
export interface DigestInput {
  user: string;
  password: string;
  method: string;
  uri: string;
  cnonce: string;
  nc: number;
}

/**
 * The `Proxy-Authorization` value answering `challenge`.
 * @throws {SchemeUnavailable} for an algorithm or qop this agent does not do.
 */
export function digestResponse(challenge: Challenge, input: DigestInput): string {
  const { params } = challenge;
  const algorithm = params.get("algorithm") ?? "MD5";
  const base = algorithm.toLowerCase().replace(/-sess$/, "");
  const hashName = ALGORITHMS[base];
  if (!hashName) {
    throw new SchemeUnavailable(
      "Digest",
      `the proxy asks for Digest with algorithm ${algorithm}`,
      "this agent does MD5 and SHA-256",
    );
  }
  const h = (text: string) => createHash(hashName).update(text, "utf8").digest("hex");
  const realm = params.get("realm") ?? "";
  const nonce = params.get("nonce") ?? "";
  const qops = (params.get("qop") ?? "").split(",").map((q) => q.trim().toLowerCase());
  const qop = params.has("qop") ? (qops.includes("auth") ? "auth" : undefined) : "";
  if (qop === undefined) {
    throw new SchemeUnavailable("Digest", `the proxy asks for Digest with qop=${params.get("qop")}`, "this agent does qop=auth");
  }
  const userhash = params.get("userhash")?.toLowerCase() === "true";
  let ha1 = h(`${input.user}:${realm}:${input.password}`);
  if (algorithm.toLowerCase().endsWith("-sess")) ha1 = h(`${ha1}:${nonce}:${input.cnonce}`);
  const ha2 = h(`${input.method}:${input.uri}`);
  const nc = input.nc.toString(16).padStart(8, "0");
  const response = qop ? h(`${ha1}:${nonce}:${nc}:${input.cnonce}:${qop}:${ha2}`) : h(`${ha1}:${nonce}:${ha2}`);
  const fields = [
    `username=${quote(userhash ? h(`${input.user}:${realm}`) : input.user)}`,
    `realm=${quote(realm)}`,
    `nonce=${quote(nonce)}`,
    `uri=${quote(input.uri)}`,
    `response=${quote(response)}`,
  ];
  if (params.has("algorithm")) fields.push(`algorithm=${algorithm}`);
  if (params.has("opaque")) fields.push(`opaque=${quote(params.get("opaque")!)}`);
  if (qop) fields.push(`qop=${qop}`, `nc=${nc}`, `cnonce=${quote(input.cnonce)}`);
  if (userhash) fields.push("userhash=true");
  return `Digest ${fields.join(", ")}`;
}

export const digest: ProxyAuthScheme = {
  name: "digest",
  start({ credentials, target }) {
    if (!credentials) throw needsCredentials("Digest");
    let attempts = 0;
    let stale = false;
    let nc = 0;
    let lastNonce: string | undefined;
    return {
      scheme: "Digest",
      connectionBound: false,
      get attempts() {
        return attempts;
      },
      respond(challenge) {
        if (!challenge) return undefined; // Digest needs the proxy's nonce first
        if (attempts > 0) {
          // RFC 7616 section 3.3: stale=true means the nonce expired, not the credentials: one
          // more try with the new nonce. Anything else after an answer is a refusal.
          const retry = challenge.params.get("stale")?.toLowerCase() === "true" && !stale;
          if (!retry) return undefined;
          stale = true;
        }
        const nonce = challenge.params.get("nonce");
        nc = nonce === lastNonce ? nc + 1 : 1;
        lastNonce = nonce;
        const header = digestResponse(challenge, {
          user: credentials.user,
          password: credentials.password,
          method: "CONNECT",
          uri: target,
          cnonce: randomBytes(16).toString("hex"),
          nc,
        });
        attempts++;
        return header;
      },
    };
  },
};
