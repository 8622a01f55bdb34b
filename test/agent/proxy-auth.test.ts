import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseChallenges, quote } from "../../agent/src/net/proxy-auth/challenge.ts";
import { digest, digestResponse } from "../../agent/src/net/proxy-auth/digest.ts";
import { md4 } from "../../agent/src/net/proxy-auth/md4.ts";
import {
  authenticateMessage,
  ntlmExchange,
  ntlmv2Responses,
  ntowfv2,
  parseChallengeMessage,
  splitUser,
} from "../../agent/src/net/proxy-auth/ntlm.ts";
import type { Challenge } from "../../agent/src/net/proxy-auth/scheme.ts";
import { selectScheme } from "../../agent/src/net/proxy-auth/select.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const bytes = (text: string) => Buffer.from(text.replace(/\s+/g, ""), "hex");

describe("MD4", () => {
  it("gives RFC 1320's test suite (appendix A.5)", () => {
    const suite: [string, string][] = [
      ["", "31d6cfe0d16ae931b73c59d7e0c089c0"],
      ["a", "bde52cb31de33e46245e05fbdbd6fb24"],
      ["abc", "a448017aaf21d8525fc10ae87aa6729d"],
      ["message digest", "d9130a8164549fe818874806e1c7014b"],
      ["abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"],
      ["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"],
      ["1234567890".repeat(8), "e33b4ddc9c38f2199c3e7b164fcc0536"],
    ];
    for (const [input, digest] of suite) expect(hex(md4(Buffer.from(input))), input).toBe(digest);
  });

  it("hashes across block boundaries (55, 56, 63, 64, 65 bytes) as a second implementation does", () => {
    // MS-NLMP's NT hash of "Password" (section 4.2.2.1.2) is MD4 of its UTF-16LE form.
    expect(hex(md4(Buffer.from("Password", "utf16le")))).toBe("a4f49c406510bdcab6824ee7c30fd852");
    for (const length of [55, 56, 63, 64, 65, 119, 120, 1000]) {
      expect(md4(Buffer.alloc(length, 0x61))).toHaveLength(16);
    }
  });
});

describe("NTLMv2 (MS-NLMP section 4.2.4)", () => {
  // The CHALLENGE_MESSAGE of section 4.2.4.3: server challenge 0123456789abcdef, target info
  // MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server".
  const challengeMessage = bytes(`
    4e544c4d53535000 02000000 0c000c00 38000000 33828ae2 0123456789abcdef 0000000000000000
    24002400 44000000 060070170000000f 530065007200760065007200
    02000c0044006f006d00610069006e00 01000c00530065007200760065007200 00000000`);
  const clientChallenge = Buffer.alloc(8, 0xaa);
  const time = Buffer.alloc(8);

  it("reads the challenge message: flags, server challenge, target info", () => {
    const message = parseChallengeMessage(challengeMessage);
    expect(message.flags >>> 0).toBe(0xe28a8233);
    expect(hex(message.serverChallenge)).toBe("0123456789abcdef");
    expect(message.targetInfo).toHaveLength(0x24);
    expect(message.timestamp).toBeUndefined();
  });

  it("derives NTOWFv2 (4.2.4.1.1), the NTLMv2 proof (4.2.4.2.2), LMv2 (4.2.4.2.1) and the session base key (4.2.4.1.2)", () => {
    const key = ntowfv2("Password", "User", "Domain");
    expect(hex(key)).toBe("0c868a403bfd7a93a3001ef22ef02e3f");
    const responses = ntlmv2Responses(key, parseChallengeMessage(challengeMessage), clientChallenge, time);
    expect(hex(responses.ntProof)).toBe("68cd0ab851e51c96aabc927bebef6a1c");
    expect(hex(responses.lm)).toBe("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa");
    expect(hex(responses.sessionBaseKey)).toBe("8de40ccadbc14a82f15cb0ad0de95ca3");
  });

  it("writes an authenticate message with those responses, the user and the domain", () => {
    const message = authenticateMessage(
      parseChallengeMessage(challengeMessage),
      { user: "User", domain: "Domain", password: "Password" },
      clientChallenge,
      -11_644_473_600_000, // FILETIME 0, as the vectors use
    );
    const field = (at: number) =>
      message.subarray(message.readUInt32LE(at + 4), message.readUInt32LE(at + 4) + message.readUInt16LE(at));
    expect(message.subarray(0, 12).toString("latin1")).toBe("NTLMSSP\0\x03\0\0\0");
    expect(hex(field(12))).toBe("86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa");
    expect(hex(field(20).subarray(0, 16))).toBe("68cd0ab851e51c96aabc927bebef6a1c");
    expect(field(28).toString("utf16le")).toBe("Domain");
    expect(field(36).toString("utf16le")).toBe("User");
  });

  it("uses the challenge's MsvAvTimestamp, sends Z(24) as LMv2 then, and a fresh client challenge each time", () => {
    const stamp = Buffer.from("0090d336b734c301", "hex");
    const info = Buffer.concat([bytes("07000800"), stamp, bytes("00000000")]);
    const withStamp = Buffer.concat([challengeMessage.subarray(0, 40), bytes("0c000c00 30000000"), info]);
    const parsed = parseChallengeMessage(withStamp);
    expect(hex(parsed.timestamp!)).toBe(hex(stamp));
    const exchange = ntlmExchange({ user: "CORP\\alice", password: "pw", source: "test" });
    const type1 = exchange.respond({ scheme: "NTLM", name: "ntlm", params: new Map() }) as string;
    expect(Buffer.from(type1.slice(5), "base64").readUInt32LE(8)).toBe(1);
    const challenge: Challenge = { scheme: "NTLM", name: "ntlm", token: withStamp.toString("base64"), params: new Map() };
    const type3 = Buffer.from((exchange.respond(challenge) as string).slice(5), "base64");
    const nt = type3.subarray(type3.readUInt32LE(24), type3.readUInt32LE(24) + type3.readUInt16LE(20));
    expect(hex(nt.subarray(24, 32))).toBe(hex(stamp));
    expect(type3.subarray(type3.readUInt32LE(16), type3.readUInt32LE(16) + 24)).toEqual(Buffer.alloc(24));
    expect(exchange.attempts).toBe(1);
    // A 407 after the Type 3: refused, nothing more is sent.
    expect(exchange.respond({ scheme: "NTLM", name: "ntlm", params: new Map() })).toBeUndefined();
    const again = ntlmExchange({ user: "CORP\\alice", password: "pw", source: "test" });
    again.respond(undefined);
    const other = Buffer.from((again.respond(challenge) as string).slice(5), "base64");
    const otherNt = other.subarray(other.readUInt32LE(24), other.readUInt32LE(24) + other.readUInt16LE(20));
    expect(hex(otherNt.subarray(32, 40))).not.toBe(hex(nt.subarray(32, 40)));
  });

  it("speaks inside Negotiate when asked to (Windows' fallback without Kerberos)", () => {
    const exchange = ntlmExchange({ user: "alice", password: "pw", source: "test" }, "Negotiate");
    expect(exchange.respond(undefined)).toMatch(/^Negotiate TlRMTVNTUAAB/);
  });

  it("refuses a token that is not a challenge message", () => {
    expect(() => parseChallengeMessage(Buffer.from("NTLMSSP\0\x01\0\0\0".padEnd(40, "\0"), "latin1"))).toThrow(/Type 2/);
    const bad = Buffer.from(challengeMessage);
    bad.writeUInt32LE(4000, 44);
    expect(() => parseChallengeMessage(bad)).toThrow(/outside/);
  });

  it("reads DOMAIN\\user and user@DOMAIN", () => {
    expect(splitUser("CORP\\alice")).toEqual({ user: "alice", domain: "CORP" });
    expect(splitUser("alice@corp.example")).toEqual({ user: "alice", domain: "corp.example" });
    expect(splitUser("alice")).toEqual({ user: "alice", domain: "" });
  });
});

describe("Digest (RFC 7616 section 3.9.1)", () => {
  const challenge = (algorithm: string): Challenge =>
    parseChallenges([
      `Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=${algorithm}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`,
    ])[0]!;
  const input = {
    user: "Mufasa",
    password: "Circle of Life",
    method: "GET",
    uri: "/dir/index.html",
    cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    nc: 1,
  };

  it("gives the RFC's MD5 and SHA-256 responses", () => {
    expect(digestResponse(challenge("MD5"), input)).toContain('response="8ca523f5e9506fed4657c9700eebdbec"');
    const sha = digestResponse(challenge("SHA-256"), input);
    expect(sha).toContain('response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"');
    expect(sha).toContain("qop=auth, nc=00000001");
    expect(sha).toContain('opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"');
  });

  it("does the -sess variants and RFC 2069's form without qop", () => {
    // HA1 = H(H(user:realm:password):nonce:cnonce) (RFC 7616 section 3.4.2), checked by hand.
    const sess = digestResponse(challenge("MD5-sess"), input);
    expect(sess).toMatch(/response="[0-9a-f]{32}"/);
    expect(sess).not.toContain("8ca523f5e9506fed4657c9700eebdbec");
    const old = parseChallenges(['Digest realm="r", nonce="n"'])[0]!;
    expect(digestResponse(old, input)).not.toContain("qop=");
  });

  it("answers CONNECT with uri host:443, retries a stale nonce once, and takes a refusal as final", () => {
    const exchange = digest.start({
      proxyHost: "proxy",
      proxyPort: 3128,
      target: "relay.example:443",
      credentials: { user: "alice", password: "pw", source: "test" },
    }) as ReturnType<typeof ntlmExchange>;
    expect(exchange.respond(undefined)).toBeUndefined();
    expect(exchange.respond(challenge("MD5"))).toContain('uri="relay.example:443"');
    const stale = parseChallenges(['Digest realm="r", nonce="new", stale=true'])[0]!;
    expect(exchange.respond(stale)).toContain('nonce="new"');
    expect(exchange.respond(stale)).toBeUndefined();
    expect(exchange.attempts).toBe(2);
    const refused = digest.start({
      proxyHost: "proxy",
      proxyPort: 3128,
      target: "relay.example:443",
      credentials: { user: "alice", password: "pw", source: "test" },
    }) as ReturnType<typeof ntlmExchange>;
    refused.respond(challenge("MD5"));
    expect(refused.respond(challenge("MD5"))).toBeUndefined();
    expect(refused.attempts).toBe(1);
  });

  it("refuses an algorithm it does not do, naming it", () => {
    expect(() => digestResponse(challenge("SHA-512-256"), input)).toThrow(/SHA-512-256/);
  });
});

describe("Proxy-Authenticate", () => {
  it("keeps repeated fields apart and splits several challenges in one field", () => {
    const challenges = parseChallenges([
      "Negotiate, NTLM",
      'Digest realm="corp, inc.", nonce="a=b,c", qop="auth,auth-int", Basic realm="x\\"y"',
      "NTLM TlRMTVNTUAACAAAA==",
    ]);
    expect(challenges.map((c) => c.scheme)).toEqual(["Negotiate", "NTLM", "Digest", "Basic", "NTLM"]);
    expect(Object.fromEntries(challenges[2]!.params)).toEqual({ realm: "corp, inc.", nonce: "a=b,c", qop: "auth,auth-int" });
    expect(challenges[3]!.params.get("realm")).toBe('x"y');
    expect(challenges[4]!.token).toBe("TlRMTVNTUAACAAAA==");
  });

  it("takes token68 and auth-params apart, and parameter names in any case", () => {
    const [a, b] = parseChallenges(['Basic realm=simple, DIGEST Realm = "r" , NONCE=n']);
    expect(a!.params.get("realm")).toBe("simple");
    expect(b!.name).toBe("digest");
    expect(Object.fromEntries(b!.params)).toEqual({ realm: "r", nonce: "n" });
  });

  const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,11}$/);
  const challengeArb = fc.oneof(
    fc.record({ scheme: token, token: fc.stringMatching(/^[A-Za-z0-9+/]{1,40}={0,2}$/) }),
    fc.record({
      scheme: token,
      params: fc.uniqueArray(fc.tuple(token, fc.string({ maxLength: 20 })), {
        minLength: 1,
        maxLength: 4,
        selector: ([name]) => name.toLowerCase(),
      }),
    }),
  );

  it("reads back what it is given, however many challenges a field carries (property)", () => {
    fc.assert(
      fc.property(fc.array(challengeArb, { minLength: 1, maxLength: 4 }), (list) => {
        const text = list
          .map((c) =>
            "token" in c ? `${c.scheme} ${c.token}` : `${c.scheme} ${c.params.map(([k, v]) => `${k}=${quote(v)}`).join(", ")}`,
          )
          .join(", ");
        const parsed = parseChallenges([text]);
        expect(parsed.map((c) => c.scheme)).toEqual(list.map((c) => c.scheme));
        parsed.forEach((c, i) => {
          const given = list[i]!;
          if ("token" in given) expect(c.token).toBe(given.token);
          else expect([...c.params]).toEqual(given.params.map(([k, v]) => [k.toLowerCase(), v]));
        });
      }),
    );
  });

  it("never throws on arbitrary input (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "binary", maxLength: 200 }), { maxLength: 3 }), (values) => {
        for (const challenge of parseChallenges(values)) expect(challenge.name).toBe(challenge.scheme.toLowerCase());
      }),
    );
  });
});

describe("the choice of scheme", () => {
  const context = {
    proxyHost: "proxy.corp",
    proxyPort: 3128,
    target: "relay:443",
    credentials: { user: "alice", password: "pw", source: "test" },
  };

  it("takes NTLM over Digest over Basic, and moves on from an unavailable Negotiate", async () => {
    const offered = parseChallenges(['Basic realm="x"', 'Digest realm="x", nonce="n"', "NTLM", "Negotiate"]);
    expect((await selectScheme(offered, context, undefined)).exchange.scheme).toBe("NTLM");
    expect((await selectScheme(offered.slice(0, 2), context, undefined)).exchange.scheme).toBe("Digest");
    expect((await selectScheme(offered, context, "basic")).exchange.scheme).toBe("Basic");
  });

  it("says what the proxy offers when the pinned scheme is not among them", async () => {
    await expect(selectScheme(parseChallenges(["NTLM"]), context, "digest")).rejects.toThrow(
      /--proxy-auth digest: the proxy does not offer it; it offers NTLM/,
    );
  });

  it("names the proxy's schemes when none can be used, and why", async () => {
    await expect(selectScheme(parseChallenges(["Bearer realm=x"]), context, undefined)).rejects.toThrow(
      /offers Bearer, none of which this agent speaks/,
    );
    await expect(selectScheme([], context, undefined)).rejects.toThrow(/names no scheme .*no Proxy-Authenticate field/);
    await expect(
      selectScheme(parseChallenges(["Negotiate", "NTLM"]), { ...context, credentials: undefined }, undefined),
    ).rejects.toThrow(/Negotiate: .*; NTLM: NTLM needs a user name and a password/);
  });
});
