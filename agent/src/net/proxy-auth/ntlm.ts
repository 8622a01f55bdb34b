// NTLM (MS-NLMP), NTLMv2 only: no NTLMv1, no LM hash. Three messages on one TCP connection:
// Negotiate (Type 1) from us, the proxy's Challenge (Type 2) in its 407, our Authenticate
// (Type 3). Windows also sends these raw inside `Negotiate` when Kerberos is unavailable, so the
// exchange takes the scheme name it speaks under.
import { createHmac, randomBytes } from "node:crypto";
import { needsCredentials } from "./basic.ts";
import { md4 } from "./md4.ts";
import type { Credentials, ProxyAuthExchange, ProxyAuthScheme } from "./scheme.ts";

// MS-NLMP section 2.2.2.5
const UNICODE = 0x00000001;
const OEM = 0x00000002;
const REQUEST_TARGET = 0x00000004;
const NTLM = 0x00000200;
const ALWAYS_SIGN = 0x00008000;
const EXTENDED_SESSIONSECURITY = 0x00080000;
const TARGET_INFO = 0x00800000;
const NEGOTIATE_128 = 0x20000000;
const NEGOTIATE_56 = 0x80000000;
const OURS = UNICODE | OEM | REQUEST_TARGET | NTLM | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | NEGOTIATE_128 | NEGOTIATE_56;

const SIGNATURE = Buffer.from("NTLMSSP\0", "latin1");
/** MS-NLMP section 2.2.2.1: AvId of MsvAvEOL and MsvAvTimestamp. */
const AV_EOL = 0;
const AV_TIMESTAMP = 7;

/** The proxy's CHALLENGE_MESSAGE (MS-NLMP section 2.2.1.2), the parts NTLMv2 uses. */
export interface ChallengeMessage {
  flags: number;
  serverChallenge: Buffer;
  /** The AV pairs as sent, through MsvAvEOL: they go into the response unchanged. */
  targetInfo: Buffer;
  /** MsvAvTimestamp (a FILETIME), when the proxy sent one. */
  timestamp: Buffer | undefined;
}

/** Our NEGOTIATE_MESSAGE (MS-NLMP section 2.2.1.1): flags only, no domain or workstation. */
export function negotiateMessage(): Buffer {
  const message = Buffer.alloc(32);
  SIGNATURE.copy(message, 0);
  message.writeUInt32LE(1, 8);
  message.writeUInt32LE(OURS >>> 0, 12);
  return message;
}

/**
 * Reads a CHALLENGE_MESSAGE.
 * @throws {Error} when it is not one, or a field points outside it.
 */
export function parseChallengeMessage(bytes: Buffer): ChallengeMessage {
  if (bytes.length < 32 || !bytes.subarray(0, 8).equals(SIGNATURE) || bytes.readUInt32LE(8) !== 2) {
    throw new Error("the proxy's NTLM token is not a challenge message (Type 2)");
  }
  const flags = bytes.readUInt32LE(20);
  const serverChallenge = Buffer.from(bytes.subarray(24, 32));
  let targetInfo = Buffer.alloc(0);
  // TargetInfoFields exist only with NTLMSSP_NEGOTIATE_TARGET_INFO (squid's ntlm_fake_auth
  // sends a shorter message without them, its target name right after the challenge).
  if ((flags & TARGET_INFO) !== 0 && bytes.length >= 48) {
    const length = bytes.readUInt16LE(40);
    const offset = bytes.readUInt32LE(44);
    if (offset + length > bytes.length) throw new Error("the proxy's NTLM challenge has a target info outside the message");
    targetInfo = Buffer.from(bytes.subarray(offset, offset + length));
  }
  let timestamp: Buffer | undefined;
  for (let at = 0; at + 4 <= targetInfo.length; ) {
    const id = targetInfo.readUInt16LE(at);
    const length = targetInfo.readUInt16LE(at + 2);
    if (id === AV_EOL) break;
    if (at + 4 + length > targetInfo.length) throw new Error("the proxy's NTLM challenge has a malformed target info");
    if (id === AV_TIMESTAMP && length === 8) timestamp = Buffer.from(targetInfo.subarray(at + 4, at + 12));
    at += 4 + length;
  }
  return { flags, serverChallenge, targetInfo, timestamp };
}

const utf16 = (text: string) => Buffer.from(text, "utf16le");
const hmacMd5 = (key: Uint8Array, ...data: Uint8Array[]) => {
  const mac = createHmac("md5", key);
  for (const part of data) mac.update(part);
  return mac.digest();
};

/** NTOWFv2 (MS-NLMP section 3.3.2): HMAC-MD5 of the user and domain under MD4 of the password. */
export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(md4(utf16(password)), utf16(user.toUpperCase() + domain));
}

/** The NTLMv2 and LMv2 responses (MS-NLMP section 3.3.2) to `challenge`. */
export function ntlmv2Responses(
  responseKey: Buffer,
  challenge: Pick<ChallengeMessage, "serverChallenge" | "targetInfo">,
  clientChallenge: Buffer,
  time: Buffer,
): { nt: Buffer; lm: Buffer; ntProof: Buffer; sessionBaseKey: Buffer } {
  const temp = Buffer.concat([
    Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]),
    time,
    clientChallenge,
    Buffer.alloc(4),
    challenge.targetInfo,
    Buffer.alloc(4),
  ]);
  const ntProof = hmacMd5(responseKey, challenge.serverChallenge, temp);
  return {
    nt: Buffer.concat([ntProof, temp]),
    lm: Buffer.concat([hmacMd5(responseKey, challenge.serverChallenge, clientChallenge), clientChallenge]),
    ntProof,
    sessionBaseKey: hmacMd5(responseKey, ntProof),
  };
}

/** Now as a FILETIME: 100 ns ticks since 1601-01-01, little-endian. */
function filetime(now = Date.now()): Buffer {
  const time = Buffer.alloc(8);
  time.writeBigUInt64LE((BigInt(now) + 11_644_473_600_000n) * 10_000n);
  return time;
}

/** "DOMAIN\\user" or "user@DOMAIN" as NTLM's user and domain. */
export function splitUser(user: string): { user: string; domain: string } {
  const slash = user.search(/[\\/]/);
  if (slash >= 0) return { domain: user.slice(0, slash), user: user.slice(slash + 1) };
  const at = user.lastIndexOf("@");
  if (at > 0) return { user: user.slice(0, at), domain: user.slice(at + 1) };
  return { user, domain: "" };
}

/** Our AUTHENTICATE_MESSAGE (MS-NLMP section 2.2.1.3), without MIC, version or session key. */
export function authenticateMessage(
  challenge: ChallengeMessage,
  credentials: { user: string; domain: string; password: string },
  clientChallenge: Buffer,
  now = Date.now(),
): Buffer {
  const unicode = (challenge.flags & UNICODE) !== 0;
  const text = (value: string) => (unicode ? utf16(value) : Buffer.from(value, "latin1"));
  const key = ntowfv2(credentials.password, credentials.user, credentials.domain);
  const { nt, lm } = ntlmv2Responses(key, challenge, clientChallenge, challenge.timestamp ?? filetime(now));
  // MS-NLMP section 3.1.5.1.2: with a server timestamp, the LmChallengeResponse is Z(24).
  const lmResponse = challenge.timestamp ? Buffer.alloc(24) : lm;
  const fields = [lmResponse, nt, text(credentials.domain), text(credentials.user), text("")];
  const header = Buffer.alloc(64);
  SIGNATURE.copy(header, 0);
  header.writeUInt32LE(3, 8);
  let offset = header.length;
  fields.forEach((field, i) => {
    header.writeUInt16LE(field.length, 12 + i * 8);
    header.writeUInt16LE(field.length, 14 + i * 8);
    header.writeUInt32LE(offset, 16 + i * 8);
    offset += field.length;
  });
  header.writeUInt32LE(offset, 56); // EncryptedRandomSessionKey: empty, at the end
  const flags = (challenge.flags & OURS & ~(unicode ? OEM : UNICODE)) | NTLM;
  header.writeUInt32LE(flags >>> 0, 60);
  return Buffer.concat([header, ...fields]);
}

/**
 * One NTLM handshake, under `scheme` ("NTLM", or "Negotiate" for Windows' fallback inside it).
 * Bound to its connection: the challenge belongs to the connection it came on.
 */
export function ntlmExchange(credentials: Credentials, scheme = "NTLM"): ProxyAuthExchange {
  let state: "start" | "negotiated" | "authenticated" = "start";
  let attempts = 0;
  const { user, domain } = splitUser(credentials.user);
  return {
    scheme,
    connectionBound: true,
    get attempts() {
      return attempts;
    },
    respond(challenge) {
      if (!challenge?.token) {
        if (state !== "start") return undefined; // refused (or the proxy started over): stop
        state = "negotiated";
        return `${scheme} ${negotiateMessage().toString("base64")}`;
      }
      if (state !== "negotiated") return undefined;
      const message = parseChallengeMessage(Buffer.from(challenge.token, "base64"));
      state = "authenticated";
      attempts++;
      const token = authenticateMessage(message, { user, domain, password: credentials.password }, randomBytes(8));
      return `${scheme} ${token.toString("base64")}`;
    },
  };
}

export const ntlm: ProxyAuthScheme = {
  name: "ntlm",
  start({ credentials }) {
    if (!credentials) throw needsCredentials("NTLM");
    return ntlmExchange(credentials);
  },
};
