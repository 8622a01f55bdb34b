import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_PAC_BYTES, PAC_MAX_LOOKUPS, PAC_TIME_LIMIT_MS } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PacError, parsePacAnswer } from "../../agent/src/net/pac/answer.ts";
import { readPac } from "../../agent/src/net/pac/fetch.ts";
import {
  convert_addr,
  dateRange,
  dnsDomainIs,
  dnsDomainLevels,
  inPrefix,
  isPlainHostName,
  localHostOrDomainIs,
  shExpMatch,
  sortIpAddressList,
  timeRange,
  weekdayRange,
} from "../../agent/src/net/pac/helpers.ts";
import { findProxyForUrl, type PacHost } from "../../agent/src/net/pac/sandbox.ts";

/** A machine for the sandbox: DNS from a table (counting lookups), fixed addresses and clock. */
function machine(names: Record<string, string[]> = {}, now = new Date("2026-12-09T14:30:15Z")) {
  const lookups: string[] = [];
  const alerts: string[] = [];
  const host: PacHost = {
    async lookup(name) {
      lookups.push(name);
      if (name === "slow.example") return new Promise(() => {}); // never answers
      return names[name] ?? [];
    },
    addresses: () => ["192.0.2.7", "2001:db8::7"],
    alert: (line) => alerts.push(line),
    now: () => now,
  };
  return { host, lookups, alerts };
}

const run = (script: string, host = "relay.example.com", m = machine()) =>
  findProxyForUrl(script, `https://${host}/`, host, m.host).then((e) => e.answer);

describe("PAC helpers", () => {
  it("isPlainHostName, dnsDomainIs, localHostOrDomainIs, dnsDomainLevels", () => {
    expect(isPlainHostName("www")).toBe(true);
    expect(isPlainHostName("www.corp.example")).toBe(false);
    expect(dnsDomainIs("www.corp.example", ".corp.example")).toBe(true);
    expect(dnsDomainIs("www.CORP.example", ".corp.example")).toBe(true);
    expect(dnsDomainIs("www.other.example", ".corp.example")).toBe(false);
    expect(localHostOrDomainIs("www.corp.example", "www.corp.example")).toBe(true);
    expect(localHostOrDomainIs("www", "www.corp.example")).toBe(true);
    expect(localHostOrDomainIs("www.other.example", "www.corp.example")).toBe(false);
    expect(localHostOrDomainIs("home", "www.corp.example")).toBe(false);
    expect(dnsDomainLevels("www")).toBe(0);
    expect(dnsDomainLevels("www.corp.example")).toBe(2);
  });

  it("shExpMatch matches * and ? over the whole string, everything else literally", () => {
    expect(shExpMatch("http://home.corp.example/index.html", "*/index.html")).toBe(true);
    expect(shExpMatch("relay.example.com", "*.example.com")).toBe(true);
    expect(shExpMatch("relayXexampleYcom", "relay.example.com")).toBe(false);
    expect(shExpMatch("a1b", "a?b")).toBe(true);
    expect(shExpMatch("a12b", "a?b")).toBe(false);
    expect(shExpMatch("x(y)+[z]", "x(y)+[z]")).toBe(true);
  });

  it("convert_addr, and prefixes of IPv4 and IPv6 (isInNetEx)", () => {
    expect(convert_addr("10.1.2.3")).toBe(0x0a010203);
    expect(convert_addr("255.255.255.255")).toBe(0xffffffff);
    expect(convert_addr("junk")).toBe(0);
    expect(inPrefix("10.1.2.3", "10.0.0.0/8")).toBe(true);
    expect(inPrefix("11.1.2.3", "10.0.0.0/8")).toBe(false);
    expect(inPrefix("fe80::1", "fe80::/10")).toBe(true);
    expect(inPrefix("2001:db8::1", "fe80::/10")).toBe(false);
    expect(inPrefix("::ffff:10.0.0.1", "::ffff:10.0.0.0/104")).toBe(true);
    expect(inPrefix("10.0.0.1", "fe80::/10")).toBe(false);
  });

  it("sortIpAddressList puts IPv6 first, each family in order", () => {
    expect(sortIpAddressList("10.2.0.1;2001:db8::2;10.1.0.1;2001:db8::1")).toBe("2001:db8::1;2001:db8::2;10.1.0.1;10.2.0.1");
    expect(sortIpAddressList("junk;10.0.0.1")).toBe(false);
  });

  // Wednesday 9 December 2026, 14:30:15 UTC.
  const now = new Date("2026-12-09T14:30:15Z");

  it("weekdayRange: one day, a range, a range across the weekend", () => {
    expect(weekdayRange(now, "WED", "GMT")).toBe(true);
    expect(weekdayRange(now, "MON", "FRI", "GMT")).toBe(true);
    expect(weekdayRange(now, "SAT", "TUE", "GMT")).toBe(false);
    expect(weekdayRange(now, "FRI", "WED", "GMT")).toBe(true);
    expect(weekdayRange(now, "NOPE")).toBe(false);
  });

  it("dateRange: a day, a month, a year, ranges of each and of mixed fields", () => {
    expect(dateRange(now, 9, "GMT")).toBe(true);
    expect(dateRange(now, "DEC", "GMT")).toBe(true);
    expect(dateRange(now, 2026, "GMT")).toBe(true);
    expect(dateRange(now, 2025, "GMT")).toBe(false);
    expect(dateRange(now, 1, 15, "GMT")).toBe(true);
    expect(dateRange(now, "NOV", "FEB", "GMT")).toBe(true);
    expect(dateRange(now, "JAN", "NOV", "GMT")).toBe(false);
    expect(dateRange(now, 1, "DEC", 31, "DEC", "GMT")).toBe(true);
    expect(dateRange(now, 10, "DEC", 31, "DEC", "GMT")).toBe(false);
    expect(dateRange(now, "DEC", 2025, "JAN", 2027, "GMT")).toBe(true);
    expect(dateRange(now, 1, "JAN", 2026, 8, "DEC", 2026, "GMT")).toBe(false);
    expect(dateRange(now, "junk")).toBe(false);
  });

  it("timeRange: an hour, hours, minutes, seconds, across midnight", () => {
    expect(timeRange(now, 14, "GMT")).toBe(true);
    expect(timeRange(now, 9, 17, "GMT")).toBe(true);
    expect(timeRange(now, 15, 17, "GMT")).toBe(false);
    expect(timeRange(now, 22, 14, "GMT")).toBe(true);
    expect(timeRange(now, 14, 0, 14, 30, "GMT")).toBe(true);
    expect(timeRange(now, 14, 31, 15, 0, "GMT")).toBe(false);
    expect(timeRange(now, 14, 30, 0, 14, 30, 10, "GMT")).toBe(false);
    expect(timeRange(now, 14, 30, 10, 14, 30, 20, "GMT")).toBe(true);
  });
});

describe("PAC answers", () => {
  it("keeps the order of PROXY, HTTP and DIRECT, with port 80 by default", () => {
    expect(parsePacAnswer("PROXY a:3128; HTTP b; DIRECT").choices).toEqual([
      { kind: "proxy", host: "a", port: 3128 },
      { kind: "proxy", host: "b", port: 80 },
      { kind: "direct" },
    ]);
  });

  it("skips SOCKS and HTTPS proxies, saying they are not supported", () => {
    const { choices, skipped } = parsePacAnswer("SOCKS5 s:1080; HTTPS h:443; PROXY p:8080");
    expect(choices).toEqual([{ kind: "proxy", host: "p", port: 8080 }]);
    expect(skipped[0]).toMatch(/SOCKS proxies are not supported/);
    expect(skipped[1]).toMatch(/HTTPS proxies .* not supported/);
  });

  it("refuses an answer with nothing usable, quoting it", () => {
    expect(() => parsePacAnswer("SOCKS s:1080")).toThrow(/names no usable way out: SOCKS s:1080: SOCKS proxies/);
    expect(() => parsePacAnswer("")).toThrow(/answered "", which names no usable way out/);
    expect(() => parsePacAnswer("PROXY a:99999; hello world")).toThrow(/not a PAC answer/);
  });
});

describe("the PAC sandbox", () => {
  it("runs FindProxyForURL with the URL and the host", async () => {
    const script = `function FindProxyForURL(url, host) {
      if (dnsDomainIs(host, ".example.com") && url === "https://relay.example.com/") return "PROXY a:3128; DIRECT";
      return "DIRECT";
    }`;
    expect(await run(script)).toBe("PROXY a:3128; DIRECT");
    expect(await run(script, "other.example.org")).toBe("DIRECT");
  });

  it("resolves names with the runtime's resolver, once each, and runs again with the answers", async () => {
    const m = machine({ "relay.example.com": ["2001:db8::1", "10.1.2.3"], "gone.example": [] });
    const script = `function FindProxyForURL(url, host) {
      alert("deciding " + host);
      if (isResolvable("gone.example")) return "DIRECT";
      if (isInNet(host, "10.0.0.0", "255.0.0.0") && dnsResolve(host) === "10.1.2.3"
          && dnsResolveEx(host) === "2001:db8::1;10.1.2.3" && isResolvableEx(host) && isInNetEx(host, "2001:db8::/32"))
        return "PROXY inside:3128";
      return "PROXY outside:3128";
    }`;
    const evaluation = await findProxyForUrl(script, "https://relay.example.com/", "relay.example.com", m.host);
    expect(evaluation.answer).toBe("PROXY inside:3128");
    expect(m.lookups.sort()).toEqual(["gone.example", "relay.example.com"]);
    // The PAC ran three times (nothing known, then one name, then both): its alert once.
    expect(m.alerts).toEqual(["deciding relay.example.com"]);
    expect(evaluation.trace).toContain('isInNet("relay.example.com", "10.0.0.0", "255.0.0.0") = true');
  });

  it("takes IP literals as they are, without a lookup", async () => {
    const m = machine();
    expect(
      await run(
        `function FindProxyForURL(u, h) { return isInNet(h, "10.0.0.0", "255.0.0.0") ? "DIRECT" : "PROXY p:1"; }`,
        "10.9.9.9",
        m,
      ),
    ).toBe("DIRECT");
    expect(m.lookups).toEqual([]);
  });

  it("counts a name that does not answer in time as not resolvable", async () => {
    const script = `function FindProxyForURL(u, h) { return isResolvable("slow.example") ? "PROXY p:1" : "DIRECT"; }`;
    expect(await run(script)).toBe("DIRECT");
  });

  it(`stops a PAC that looks up more than ${PAC_MAX_LOOKUPS} names`, async () => {
    const script = `function FindProxyForURL(u, h) { for (var i = 0; i < 20; i++) dnsResolve("n" + i + ".example"); return "DIRECT"; }`;
    await expect(run(script)).rejects.toThrow(/more than 8 names for one URL \(PAC_MAX_LOOKUPS\)/);
  });

  it("answers myIpAddress from the machine's interfaces, and myIpAddressEx with all of them", async () => {
    const script = `function FindProxyForURL(u, h) { return "PROXY " + myIpAddress() + ":1; DIRECT " + myIpAddressEx(); }`;
    expect(await run(script)).toBe("PROXY 192.0.2.7:1; DIRECT 192.0.2.7;2001:db8::7");
  });

  it("passes on the machine's own failure (a runtime's missing permission) as it is, not as the PAC's", async () => {
    const denied = Object.assign(new Error('Requires sys access to "networkInterfaces"'), { name: "NotCapable" });
    const m = machine();
    m.host.addresses = () => {
      throw denied;
    };
    const script = `function FindProxyForURL(u, h) { try { return myIpAddress(); } catch (e) { return "DIRECT"; } }`;
    await expect(run(script, "relay.example.com", m)).rejects.toBe(denied);
  });

  it("answers the time helpers from the clock", async () => {
    const script = `function FindProxyForURL(u, h) {
      return [weekdayRange("WED", "GMT"), dateRange("DEC", "GMT"), timeRange(14, "GMT"), shExpMatch(h, "*.com"),
        localHostOrDomainIs("relay", "relay.example.com"), dnsDomainLevels(h), convert_addr("0.0.1.0"),
        isPlainHostName(h), sortIpAddressList("10.0.0.2;10.0.0.1")].join(",");
    }`;
    expect(await run(script)).toBe("true,true,true,true,true,2,256,false,10.0.0.1;10.0.0.2");
  });

  it(`stops a PAC that loops forever after ${PAC_TIME_LIMIT_MS / 1000}s`, async () => {
    await expect(run("function FindProxyForURL(u, h) { for (;;) {} }")).rejects.toThrow(
      /ran longer than 2s \(PAC_TIME_LIMIT_MS\) and was stopped/,
    );
    await expect(run("while (true) {} function FindProxyForURL() {}")).rejects.toThrow(/PAC_TIME_LIMIT_MS/);
  });

  // One allocation past the limit: QuickJS refuses it at once. (Filling the limit with small ones
  // first grows the wasm memory, which can take longer than the time limit on a busy machine.)
  it("stops a PAC that takes too much memory", async () => {
    const script = `function FindProxyForURL(u, h) { return new Uint8Array(64 << 20).length; }`;
    await expect(run(script)).rejects.toThrow(/used more than 32 MiB \(PAC_MEMORY_LIMIT\) and was stopped/);
  });

  it("says where a PAC threw, or that it does not compile", async () => {
    const thrower = `function FindProxyForURL(u, h) {\n  return undefinedThing.proxy;\n}`;
    await expect(run(thrower)).rejects.toThrow(
      /the PAC file failed: ReferenceError: 'undefinedThing' is not defined \(proxy\.pac:2/,
    );
    await expect(run("function FindProxyForURL(u, h) { return ")).rejects.toThrow(/SyntaxError/);
    await expect(run(`function FindProxyForURL() { throw "no" }`)).rejects.toThrow(/threw "no"|failed/);
    await expect(run("var x = 1;")).rejects.toThrow(/defines no function FindProxyForURL/);
  });

  it("refuses an answer that is not a string", async () => {
    await expect(run("function FindProxyForURL() { return 42 }")).rejects.toThrow(/answered 42 \(a number\), not a string/);
    await expect(run("function FindProxyForURL() {}")).rejects.toThrow(/answered undefined, not a string/);
    await expect(run("function FindProxyForURL() { return {a: 1} }")).rejects.toBeInstanceOf(PacError);
  });

  it("gives the PAC no way to the machine: no require, fetch, process, modules, std/os or timers", async () => {
    const script = `function FindProxyForURL(u, h) {
      return [typeof require, typeof fetch, typeof process, typeof std, typeof os, typeof Deno, typeof Bun,
        typeof XMLHttpRequest, typeof WebSocket, typeof setTimeout, typeof globalThis.import].join(",");
    }`;
    expect(await run(script)).toBe(Array(11).fill("undefined").join(","));
    const imports = `var done = "none"; import("node:fs").then(function () { done = "loaded" }, function (e) { done = "refused" });
      function FindProxyForURL() { return done; }`;
    expect(await run(imports)).not.toBe("loaded");
  });
});

describe("reading a PAC file", () => {
  let dir: string;
  let server: http.Server;
  let base: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "burrow-pac-"));
    server = http.createServer((request, response) => {
      if (request.url === "/proxy.pac") response.end("function FindProxyForURL() { return 'DIRECT'; }");
      else if (request.url === "/huge.pac") {
        // Chunked, no Content-Length: the cap applies while reading.
        for (let i = 0; i <= MAX_PAC_BYTES / 65536; i++) response.write(Buffer.alloc(65536, 0x20));
        response.end();
      } else if (request.url === "/stall.pac") response.write("function");
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });

  afterAll(() => {
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const options = { ca: [], timeoutMs: 1000 };

  it("reads http: URLs, paths and file: URLs", async () => {
    expect(await readPac(`${base}/proxy.pac`, options)).toContain("FindProxyForURL");
    const file = join(dir, "proxy.pac");
    writeFileSync(file, "function FindProxyForURL() { return 'DIRECT'; }");
    expect(await readPac(file, options)).toContain("DIRECT");
    expect(await readPac(`file://${file}`, options)).toContain("DIRECT");
  });

  it("reads https: URLs, trusting the CAs of --ca, and says when the certificate is not trusted", async () => {
    const [key, cert] = [join(dir, "key.pem"), join(dir, "cert.pem")];
    execFileSync(
      "openssl",
      [
        ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256", "-keyout", key, "-out", cert],
        ...["-subj", "/CN=pac.test", "-addext", "subjectAltName=IP:127.0.0.1"],
      ],
      { stdio: "ignore" },
    );
    const secure = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_, response) =>
      response.end("function FindProxyForURL() { return 'DIRECT'; }"),
    );
    await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
    try {
      const url = `https://127.0.0.1:${(secure.address() as { port: number }).port}/proxy.pac`;
      expect(await readPac(url, { ...options, ca: [readFileSync(cert, "utf8")] })).toContain("DIRECT");
      await expect(readPac(url, options)).rejects.toMatchObject({
        lasting: true,
        message: /cannot fetch the PAC file https:.*self.signed.*\(pass the CA that signed it with --ca FILE\)/i,
      });
    } finally {
      secure.closeAllConnections();
      secure.close();
    }
  });

  it(`refuses a PAC file over ${MAX_PAC_BYTES} bytes, from a file or over HTTP`, async () => {
    const file = join(dir, "huge.pac");
    writeFileSync(file, Buffer.alloc(MAX_PAC_BYTES + 1, 0x20));
    await expect(readPac(file, options)).rejects.toThrow(/is 2097153 bytes; the limit is 2097152 \(MAX_PAC_BYTES\)/);
    await expect(readPac(`${base}/huge.pac`, options)).rejects.toThrow(
      /more than 2097152 bytes; the limit is 2097152 \(MAX_PAC_BYTES\)/,
    );
  });

  it("says a missing file, a 404 and a server that stalls", async () => {
    await expect(readPac(join(dir, "nope.pac"), options)).rejects.toMatchObject({
      lasting: true,
      message: /cannot read the PAC file/,
    });
    await expect(readPac(`${base}/nope.pac`, options)).rejects.toMatchObject({ lasting: true, message: /was answered 404/ });
    await expect(readPac(`${base}/stall.pac`, options)).rejects.toMatchObject({
      lasting: false,
      message: /did not arrive within 1s/,
    });
  });
});
