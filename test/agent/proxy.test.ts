import { describe, expect, it } from "vitest";
import { bypassed, proxyFor } from "../../agent/src/net/proxy.ts";

const relay = new URL("https://tunnel.example.com");
const env = (vars: Record<string, string>) => (name: string) => vars[name];

describe("proxy settings", () => {
  it("takes HTTPS_PROXY for an https relay, with percent-encoded credentials decoded", () => {
    const proxy = proxyFor(relay, undefined, env({ HTTPS_PROXY: "http://corp%20user:p%40ss%3Aw%2Frd@proxy.corp:3128" }))!;
    expect(proxy).toMatchObject({ host: "proxy.corp", port: 3128, source: "HTTPS_PROXY" });
    expect(proxy.credentials).toEqual({ user: "corp user", password: "p@ss:w/rd", source: "the proxy URL (HTTPS_PROXY)" });
    expect(proxy.display).toBe("http://corp%20user:***@proxy.corp:3128");
  });

  it("prefers the lowercase variable, falls back to ALL_PROXY, and reads host:port without a scheme", () => {
    expect(proxyFor(relay, undefined, env({ https_proxy: "http://a:1", HTTPS_PROXY: "http://b:2" }))?.host).toBe("a");
    expect(proxyFor(relay, undefined, env({ ALL_PROXY: "proxy.corp:8080" }))).toMatchObject({ host: "proxy.corp", port: 8080 });
    expect(proxyFor(new URL("http://relay.example"), undefined, env({ HTTPS_PROXY: "http://a:1" }))).toBeUndefined();
  });

  it("lets --proxy win, and --proxy none turn the environment's proxy off", () => {
    expect(proxyFor(relay, "http://flag:1", env({ HTTPS_PROXY: "http://env:2" }))).toMatchObject({
      host: "flag",
      source: "--proxy",
    });
    expect(proxyFor(relay, "none", env({ HTTPS_PROXY: "http://env:2" }))).toBeUndefined();
  });

  it("never sends a relay on this machine through the environment's proxy", () => {
    expect(proxyFor(new URL("http://localhost:8787"), undefined, env({ HTTP_PROXY: "http://p:1" }))).toBeUndefined();
    expect(proxyFor(new URL("http://127.0.0.1:8787"), undefined, env({ HTTP_PROXY: "http://p:1" }))).toBeUndefined();
  });

  it("refuses proxies it cannot speak to, saying why", () => {
    expect(() => proxyFor(relay, "socks5://p:1080", env({}))).toThrow(
      /socks5:\/\/ but the agent speaks only to http:\/\/ proxies/,
    );
    expect(() => proxyFor(relay, "http://[bad", env({}))).toThrow(/is not a URL/);
  });

  it("honours NO_PROXY as curl does", () => {
    const url = (text: string) => new URL(text);
    expect(bypassed(url("https://tunnel.example.com"), "example.com")).toBe(true);
    expect(bypassed(url("https://tunnel.example.com"), ".example.com")).toBe(true);
    expect(bypassed(url("https://tunnel.example.com"), "*.example.com")).toBe(true);
    expect(bypassed(url("https://example.com"), "ample.com")).toBe(false);
    expect(bypassed(url("https://tunnel.example.com"), "other.com, *")).toBe(true);
    expect(bypassed(url("https://10.1.2.3"), "10.0.0.0/8")).toBe(true);
    expect(bypassed(url("https://11.1.2.3"), "10.0.0.0/8")).toBe(false);
    expect(bypassed(url("https://tunnel.example.com"), "example.com:8443")).toBe(false);
    expect(bypassed(url("https://tunnel.example.com"), "example.com:443")).toBe(true);
    expect(proxyFor(relay, undefined, env({ HTTPS_PROXY: "http://p:1", NO_PROXY: "example.com" }))).toBeUndefined();
  });
});

describe("proxy credentials and scheme settings", async () => {
  const { parseArgs } = await import("../../agent/src/flags.ts");
  const { credentialsFromSettings } = await import("../../agent/src/net/proxy-auth/credentials.ts");
  const file = (values: Record<string, string>) => () => ({ file: "burrow.toml", values, lists: {}, tunnels: [] });

  it("reads proxy-user and proxy-password from burrow.toml or the variables, the flag winning for the user", () => {
    const fromFile = parseArgs([], env({}), file({ "proxy-user": "CORP\\alice", "proxy-password": "pw" }));
    expect(fromFile.values).toMatchObject({ "proxy-user": "CORP\\alice", "proxy-password": "pw" });
    const fromEnv = parseArgs(
      ["--proxy-user", "bob"],
      env({ BURROW_PROXY_USER: "alice", BURROW_PROXY_PASSWORD: "pw" }),
      () => undefined,
    );
    expect(fromEnv.values).toMatchObject({ "proxy-user": "bob", "proxy-password": "pw" });
    expect(parseArgs(["--proxy-auth", "ntlm"], env({}), () => undefined).values["proxy-auth"]).toBe("ntlm");
  });

  it("refuses --proxy-password on the command line, without repeating the value", () => {
    for (const argv of [["--proxy-password", "hunter2"], ["--proxy-password=hunter2"]]) {
      let error: unknown;
      try {
        parseArgs(argv, env({}), () => undefined);
      } catch (caught) {
        error = caught;
      }
      expect(error).toMatchObject({ code: "usage", message: expect.stringContaining("`ps`") });
      expect(JSON.stringify(error) + String((error as Error).message)).not.toContain("hunter2");
    }
  });

  it("gives the settings' credentials for any proxy host, and says which half is missing", () => {
    expect(credentialsFromSettings("alice", "pw")("proxy.corp")).toMatchObject({ user: "alice", password: "pw" });
    expect(credentialsFromSettings(undefined, undefined)("proxy.corp")).toBeUndefined();
    expect(() => credentialsFromSettings("alice", undefined)).toThrow(/proxy user is set \("alice"\) without a password/);
    expect(() => credentialsFromSettings(undefined, "pw")).toThrow(/password is set .* without a user/);
  });
});
