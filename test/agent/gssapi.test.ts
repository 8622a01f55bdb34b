import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CorpNetwork, skipCorp } from "../_corp.ts";
import { skipKerberos } from "../_kerberos.ts";

// The agent's GSSAPI binding (agent/src/net/proxy-auth/gssapi.ts) on each runtime's FFI, against
// a real KDC: the realm of a corp network (test/_kerberos.ts), its machine's krb5.conf and a
// credential cache of the test's. The probe runs inside the network, as the agent does.

const skip = skipCorp("the GSSAPI binding tests") || skipKerberos("the GSSAPI binding tests");

const RUNTIMES = {
  bun: ["node_modules/.bin/bun", "test/_gssapi-probe.ts"],
  deno: ["node_modules/.bin/deno", "run", "--allow-ffi", "--allow-env", "--allow-read", "test/_gssapi-probe.ts"],
} as const;

interface Probe {
  token?: string;
  error?: string;
  noTicket?: boolean;
  identity: { realm?: string; principal?: string };
}

describe.skipIf(skip)("the GSSAPI binding against a test KDC", () => {
  let network: CorpNetwork;

  beforeAll(async () => {
    network = await CorpNetwork.create({ egress: "squid", kerberos: true, squid: { negotiate: "kerberos" } });
    network.realm!.kinit();
  }, 60_000);

  afterAll(async () => {
    await network?.dispose();
  });

  async function probe(runtime: keyof typeof RUNTIMES, service: string, cache?: string): Promise<Probe> {
    const realm = network.realm!;
    const { status, output } = await network.run([...RUNTIMES[runtime], service], {
      env: { ...process.env, ...realm.clientEnv(cache) },
    });
    expect(status, output).toBe(0);
    return JSON.parse(output.trim().split("\n").at(-1)!) as Probe;
  }

  for (const runtime of ["bun", "deno"] as const) {
    it(`${runtime}: makes a SPNEGO token carrying a Kerberos ticket for HTTP@proxy.<domain>`, async () => {
      const realm = network.realm!;
      const result = await probe(runtime, `HTTP@${realm.proxyHost}`);
      expect(result.error).toBeUndefined();
      const token = Buffer.from(result.token!, "base64");
      // RFC 2743 3.1: [APPLICATION 0] with the SPNEGO OID 1.3.6.1.5.5.2 first (RFC 4178).
      expect(token.subarray(0, 1).toString("hex")).toBe("60");
      expect(token.includes(Buffer.from("06062b0601050502", "hex"))).toBe(true);
      // The Kerberos mechanism's OID inside, and the ticket names the proxy's service principal.
      expect(token.includes(Buffer.from("2a864886f712010202", "hex"))).toBe(true);
      expect(token.includes(Buffer.from(realm.proxyHost))).toBe(true);
      expect(token.includes(Buffer.from("HTTP"))).toBe(true);
      expect(result.identity).toEqual({ realm: realm.realm, principal: realm.principal });
    });

    it(`${runtime}: says there is no ticket, naming the cache, when the cache is empty`, async () => {
      const realm = network.realm!;
      const empty = realm.cache(`empty-${runtime}`);
      const result = await probe(runtime, `HTTP@${realm.proxyHost}`, empty);
      expect(result.token).toBeUndefined();
      expect(result.noTicket).toBe(true);
      expect(result.error).toMatch(/No Kerberos credentials available/);
      expect(result.error).toContain(empty);
      expect(result.identity).toEqual({ realm: realm.realm });
    });

    it(`${runtime}: says the ticket has expired, for kinit to renew, naming its principal`, async () => {
      const realm = network.realm!;
      const cache = realm.cache(`expired-${runtime}`);
      realm.kinit(cache, "1s");
      while (realm.valid(cache)) await new Promise((resolve) => setTimeout(resolve, 200));
      const result = await probe(runtime, `HTTP@${realm.proxyHost}`, cache);
      expect(result.token).toBeUndefined();
      expect(result).toMatchObject({ noTicket: true, identity: { realm: realm.realm, principal: realm.principal } });
      expect(result.error).toMatch(/has expired/);
    });

    it(`${runtime}: says the KDC does not know a service the proxy is not registered as`, async () => {
      const result = await probe(runtime, `HTTP@elsewhere.${network.realm!.domain}`);
      expect(result.noTicket).toBe(false);
      expect(result.error).toMatch(
        /^no Kerberos service ticket for HTTP@elsewhere\.burrow\.test: .*not found in Kerberos database/,
      );
    });
  }
});
