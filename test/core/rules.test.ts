// Visitor rules the agent sets in its hello (--allow-ip, --basic-auth, --verify-webhook),
// checked by the core before a visitor's request costs the agent a frame.
import { createHmac } from "node:crypto";
import { FrameType, hashBasicCredentials } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { MemoryRelay, NO_RULES, tick } from "./_host.ts";

const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

describe("visitor rules", () => {
  it("admits listed addresses only (--allow-ip), by the address the host gives the front", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo", { rules: { ...NO_RULES, allowIp: ["198.51.100.0/24", "2001:db8::/32"] } });
    const outside = await relay.visit("demo", "/", {}, "203.0.113.7");
    expect([outside.status, outside.headers.get("x-burrow-error")]).toEqual([403, "forbidden"]);
    const unknown = await relay.visit("demo", "/", {}, null);
    expect(await unknown.text()).toContain("the relay cannot tell yours");
    await tick(10);
    expect(link.pending()).toEqual([]); // refused visitors cost the agent nothing
    void relay.visit("demo", "/in", {}, "198.51.100.20");
    expect((await link.nextOf(FrameType.RequestHead)).path).toBe("/in");
    void relay.visit("demo", "/v6", {}, "2001:db8::1");
    expect((await link.nextOf(FrameType.RequestHead)).path).toBe("/v6");
  });

  it("asks for a user name and password (--basic-auth) and keeps them from the origin", async () => {
    const relay = new MemoryRelay();
    const hash = await hashBasicCredentials("demo", "ann", "s3cret");
    const { link } = await relay.agent("demo", { rules: { ...NO_RULES, basicAuth: [hash] } });
    const none = await relay.visit("demo", "/");
    expect([none.status, none.headers.get("www-authenticate")]).toEqual([401, 'Basic realm="demo", charset="UTF-8"']);
    const wrong = await relay.visit("demo", "/", { headers: { authorization: basic("ann", "guess") } });
    expect(wrong.status).toBe(401);
    await tick(10);
    expect(link.pending()).toEqual([]);
    void relay.visit("demo", "/private", { headers: { authorization: basic("ann", "s3cret") } });
    const head = await link.nextOf(FrameType.RequestHead);
    expect(head.path).toBe("/private");
    expect(head.headers.some(([name]) => name === "authorization")).toBe(false);
  });

  it("passes only requests signed with the webhook's secret (--verify-webhook), body and all", async () => {
    const relay = new MemoryRelay();
    const rules = { ...NO_RULES, webhooks: [{ kind: "github" as const, header: "x-hub-signature-256", secret: "whsec" }] };
    const { link } = await relay.agent("demo", { rules });
    const body = '{"action":"opened"}';
    const sign = (secret: string) => `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
    const forged = await relay.visit("demo", "/hook", {
      method: "POST",
      body,
      headers: { "x-hub-signature-256": sign("guess") },
    });
    expect([forged.status, forged.headers.get("x-burrow-error")]).toEqual([401, "unauthorized"]);
    const unsigned = await relay.visit("demo", "/hook", { method: "POST", body });
    expect(await unsigned.text()).toContain("x-hub-signature-256 is missing");
    await tick(10);
    expect(link.pending()).toEqual([]);
    void relay.visit("demo", "/hook", { method: "POST", body, headers: { "x-hub-signature-256": sign("whsec") } });
    const head = await link.nextOf(FrameType.RequestHead);
    const data = await link.nextOf(FrameType.Data);
    expect([head.path, new TextDecoder().decode(data.bytes)]).toEqual(["/hook", body]);
  });

  it("refuses a hello whose --allow-ip is not an address or range", async () => {
    const relay = new MemoryRelay();
    const { answer } = await relay.say("demo", { rules: { ...NO_RULES, allowIp: ["not-an-address"] } });
    expect(answer).toMatchObject({
      type: FrameType.Refused,
      code: "bad-hello",
      message: expect.stringContaining("not-an-address"),
    });
  });

  it("follows the agent: the hello of a new session after a cut replaces them at once", async () => {
    const relay = new MemoryRelay();
    const first = await relay.agent("demo", { rules: { ...NO_RULES, allowIp: ["198.51.100.0/24"] } });
    expect((await relay.visit("demo", "/")).status).toBe(403);
    first.link.cut(1006);
    const second = await relay.agent("demo");
    void relay.visit("demo", "/open");
    expect((await second.link.nextOf(FrameType.RequestHead)).path).toBe("/open");
  });
});
