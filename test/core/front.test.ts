// The front: routing by path and by subdomain, the relay's own pages, and its answers when no
// tunnel is there to answer.
import { CONNECT_PATH, FrameType, INFO_PATH, PROTOCOL_VERSION } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { MemoryRelay } from "./_host.ts";

const error = (response: Response) => [response.status, response.headers.get("x-burrow-error")];

describe("the front", () => {
  it("says what it is at /_burrow/info, for agent doctor: a Burrow relay, its protocol, and that it carries TCP tunnels", async () => {
    const response = await new MemoryRelay().fetch(INFO_PATH);
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(await response.json()).toEqual({ burrow: true, protocol: PROTOCOL_VERSION, tcp: true });
  });

  it("answers 404 not-found off its routes, and describes itself at /", async () => {
    const relay = new MemoryRelay();
    for (const path of ["/nothing", "/_burrow/else", "/t/"]) expect(error(await relay.fetch(path))).toEqual([404, "not-found"]);
    expect(await (await relay.fetch("/")).text()).toMatch(/This relay is open/);
    const closed = new MemoryRelay({ BURROW_TOKEN: "a-token-of-this-relay" });
    expect(await (await closed.fetch("/")).text()).toMatch(/need a token/);
  });

  it("answers 404 for reserved names and 400 for what is not a name, without reaching a tunnel", async () => {
    const relay = new MemoryRelay();
    expect(error(await relay.visit("admin"))).toEqual([404, "not-found"]);
    expect(error(await relay.visit("Not_A_Name"))).toEqual([400, "bad-request"]);
    expect(error(await relay.fetch(`${CONNECT_PATH}?name=Not_A_Name`, { headers: { upgrade: "websocket" } }))).toEqual([
      400,
      "bad-request",
    ]);
    expect(relay.tunnels.size).toBe(0);
  });

  it("redirects /t/<name> to /t/<name>/, and a percent-encoded name to its plain form", async () => {
    const relay = new MemoryRelay();
    const bare = await relay.fetch("/t/demo?q=1");
    expect([bare.status, bare.headers.get("location")]).toEqual([308, "/t/demo/?q=1"]);
    const encoded = await relay.fetch("/t/%64emo/x");
    expect([encoded.status, encoded.headers.get("location")]).toEqual([308, "/t/demo/x"]);
  });

  it("answers 426 on the connect path without an upgrade, and 400 for a shard past --connections", async () => {
    const relay = new MemoryRelay();
    expect((await relay.fetch(`${CONNECT_PATH}?name=demo`)).status).toBe(426);
    const shard = await relay.fetch(`${CONNECT_PATH}?name=demo&shard=99`, { headers: { upgrade: "websocket" } });
    expect(error(shard)).toEqual([400, "bad-request"]);
  });

  it("answers 502 agent-offline with the command to start an agent when none is connected", async () => {
    const page = await new MemoryRelay().visit("nobody", "/x");
    expect(error(page)).toEqual([502, "agent-offline"]);
    expect(await page.text()).toContain("--name nobody --relay http://relay.test");
  });

  it("routes <name>.<BASE_DOMAIN> to the tunnel whatever the path, and gives agents that URL", async () => {
    const relay = new MemoryRelay({ BASE_DOMAIN: "relay.test" });
    const { link, ready } = await relay.agent("demo");
    expect(ready.url).toBe("http://demo.relay.test");
    void relay.fetch("http://demo.relay.test/t/other/_burrow/info");
    const head = await link.nextOf(FrameType.RequestHead);
    expect(head.path).toBe("/t/other/_burrow/info");
    expect(head.headers).toContainEqual(["x-forwarded-host", "demo.relay.test"]);
  });

  it("keeps a tunnel reached by path inside its prefix: redirects and cookies", async () => {
    const relay = new MemoryRelay();
    const { link } = await relay.agent("demo");
    const response = relay.visit("demo", "/old");
    const head = await link.nextOf(FrameType.RequestHead);
    await link.deliver({
      type: FrameType.ResponseHead,
      stream: head.stream,
      status: 302,
      headers: [
        ["location", "/new"],
        ["set-cookie", "sid=1; Path=/"],
      ],
    });
    await link.deliver({ type: FrameType.End, stream: head.stream });
    const answer = await response;
    expect([answer.status, answer.headers.get("location")]).toEqual([302, "/t/demo/new"]);
    expect(answer.headers.get("set-cookie")).toContain("Path=/t/demo");
  });
});
