import { execFileSync } from "node:child_process";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { entryWhere, inspector } from "../_inspector.ts";
import { Origin } from "../_origin.ts";
import { freePort } from "../_process.ts";
import { Relay } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

describe("the agent's inspector", () => {
  let relay: Relay;
  let origin: Origin;
  let agent: AgentProcess;
  let port: number;

  beforeAll(async () => {
    [relay, origin, port] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start(), freePort()]);
    agent = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "inspected"), "--inspect", String(port)]);
  }, 90_000);

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
    await origin?.close();
  });

  it("prints its URL and lists requests through the tunnel, newest first, with their status", async () => {
    expect(agent.output).toContain(`inspector: http://127.0.0.1:${port}`);
    await visit(at(agent.url, "/echo?list=1"));
    await visit(at(agent.url, "/status/404?list=2"));
    const second = await entryWhere(port, (e) => e.path === "/status/404?list=2" && e.state === "done");
    const first = await entryWhere(port, (e) => e.path === "/echo?list=1" && e.state === "done");
    expect(first).toMatchObject({ method: "GET", status: 200, tunnel: "inspected", kind: "http", replayOf: null });
    expect(second.status).toBe(404);
    const { json } = await inspector(port, "/api/requests");
    const ids = json.map((e: { id: number }) => e.id);
    expect(ids).toEqual([...ids].sort((a: number, b: number) => b - a));
    expect(ids.indexOf(second.id)).toBeLessThan(ids.indexOf(first.id));
  });

  it("shows the heads, a pretty-printed JSON body, form fields and the timings of a request", async () => {
    await visit(at(agent.url, "/echo?detail=json"), {
      method: "POST",
      headers: { "content-type": "application/json", "x-test": "detail" },
      body: Buffer.from('{"a":1,"b":[true,null]}'),
    });
    const { id } = await entryWhere(port, (e) => e.path === "/echo?detail=json" && e.state === "done");
    const { json: entry } = await inspector(port, `/api/requests/${id}`);
    expect(entry.requestHeaders).toContainEqual(["x-test", "detail"]);
    expect(entry.request).toMatchObject({ kind: "json", size: 23, truncated: false });
    expect(entry.request.text).toBe(JSON.stringify({ a: 1, b: [true, null] }, null, 2));
    expect(entry.responseHeaders).toContainEqual(["content-type", "application/json"]);
    expect(entry.response.kind).toBe("json");
    expect(JSON.parse(entry.response.text)).toMatchObject({ method: "POST", length: 23 });
    expect(entry.timings.originHead).toBeGreaterThan(0);
    expect(entry.timings.total).toBeGreaterThanOrEqual(entry.timings.originHead);

    await visit(at(agent.url, "/echo?detail=form"), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: Buffer.from("name=Ada+Lovelace&lang=en"),
    });
    const form = await entryWhere(port, (e) => e.path === "/echo?detail=form" && e.state === "done");
    const { json: formEntry } = await inspector(port, `/api/requests/${form.id}`);
    expect(formEntry.request).toMatchObject({ kind: "form", text: "name = Ada Lovelace\nlang = en" });
  });

  it("keeps a body over 64 KiB truncated, says so, and will not replay it unedited", async () => {
    await visit(at(agent.url, "/bytes/200000"));
    const big = await entryWhere(port, (e) => e.path === "/bytes/200000" && e.state === "done");
    const { json: entry } = await inspector(port, `/api/requests/${big.id}`);
    expect(entry.response).toMatchObject({ size: 200_000, kept: 65_536, truncated: true, kind: "binary" });
    expect(entry.response.text).toMatch(/^00000000 {2}[0-9a-f]{2} /);

    await visit(at(agent.url, "/echo?upload=big"), { method: "POST", body: Buffer.alloc(100_000, "x") });
    const upload = await entryWhere(port, (e) => e.path === "/echo?upload=big" && e.state === "done");
    const refused = await inspector(port, `/api/requests/${upload.id}/replay`, { method: "POST", body: {} });
    expect(refused.status).toBe(409);
    expect(refused.json.error).toContain("kept truncated (65536 of 100000 bytes)");
  });

  it("replays a request to the origin as it was and edited, each marked as a replay", async () => {
    await visit(at(agent.url, "/echo?replay=1"), { method: "POST", headers: { "x-kept": "yes" }, body: Buffer.from("first") });
    const source = await entryWhere(port, (e) => e.path === "/echo?replay=1" && e.state === "done");
    const seen = origin.requests.length;

    const same = await inspector(port, `/api/requests/${source.id}/replay`, { method: "POST", body: {} });
    expect(same.status).toBe(202);
    const asIs = await entryWhere(port, (e) => e.id === same.json.id && e.state === "done");
    expect(asIs).toMatchObject({ replayOf: source.id, method: "POST", path: "/echo?replay=1", status: 200 });
    const { json: asIsDetail } = await inspector(port, `/api/requests/${asIs.id}`);
    expect(JSON.parse(asIsDetail.response.text)).toMatchObject({ method: "POST", length: 5, headers: { "x-kept": "yes" } });

    const edited = await inspector(port, `/api/requests/${source.id}/replay`, {
      method: "POST",
      body: { method: "PUT", path: "/echo?replay=edited", headers: [["x-edited", "1"]], body: "edited body" },
    });
    expect(edited.status).toBe(202);
    const editedEntry = await entryWhere(port, (e) => e.id === edited.json.id && e.state === "done");
    expect(editedEntry).toMatchObject({ replayOf: source.id, method: "PUT", path: "/echo?replay=edited", status: 200 });
    expect(origin.requests.length).toBe(seen + 2);
    const reached = origin.requests.at(-1)!;
    expect(reached.method).toBe("PUT");
    expect(reached.url).toBe("/echo?replay=edited");
    expect(reached.headers["x-edited"]).toBe("1");
    expect(reached.headers["x-kept"]).toBeUndefined();
    const { json: editedDetail } = await inspector(port, `/api/requests/${editedEntry.id}`);
    expect(JSON.parse(editedDetail.response.text).length).toBe("edited body".length);

    const bad = await inspector(port, `/api/requests/${source.id}/replay`, { method: "POST", body: { method: "CONNECT" } });
    expect(bad.status).toBe(400);
  });

  it("exports a request as curl and every request as HAR", async () => {
    await visit(at(agent.url, "/echo?export=1"), {
      method: "POST",
      headers: { "content-type": "text/plain", "x-quote": "it's" },
      body: Buffer.from("hello"),
    });
    const entry = await entryWhere(port, (e) => e.path === "/echo?export=1" && e.state === "done");
    const { text: command } = await inspector(port, `/api/requests/${entry.id}/curl`);
    expect(command).toContain("curl -X 'POST' 'http://inspected.localhost:");
    expect(command).toContain(`-H 'x-quote: it'\\''s'`);
    expect(command).toContain("--data-binary 'hello'");

    const har = await inspector(port, "/api/har");
    expect(har.headers["content-disposition"]).toContain("burrow.har");
    expect(har.json.log.version).toBe("1.2");
    const exported = har.json.log.entries.find((e: { request: { url: string } }) => e.request.url.endsWith("/echo?export=1"));
    expect(exported.request).toMatchObject({ method: "POST", postData: { text: "hello" }, bodySize: 5 });
    expect(exported.response.status).toBe(200);
    expect(JSON.parse(Buffer.from(exported.response.content.text, "base64").toString()).method).toBe("POST");
    expect(new Date(exported.startedDateTime).getTime()).toBeGreaterThan(0);
  });

  it("shows a visitor WebSocket with its messages", async () => {
    const target = new URL(at(agent.url, "/ws/echo?inspected=1").replace(/^http/, "ws"));
    const host = target.host;
    target.hostname = "127.0.0.1";
    const ws = new WebSocket(target.href, { headers: { host } });
    await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
    ws.send("hello origin");
    await new Promise((resolve) => ws.once("message", resolve));
    ws.send(Buffer.from([0, 1, 2, 255]));
    await new Promise((resolve) => ws.once("message", resolve));
    ws.close(1000, "bye");
    const entry = await entryWhere(port, (e) => e.path === "/ws/echo?inspected=1" && e.state === "done");
    const { json } = await inspector(port, `/api/requests/${entry.id}`);
    expect(json).toMatchObject({ kind: "websocket", status: 101, close: { code: 1000, reason: "bye", by: "visitor" } });
    expect(json.messages.map((m: { from: string; kind: string }) => `${m.from} ${m.kind}`)).toEqual([
      "visitor text",
      "origin text",
      "visitor binary",
      "origin binary",
    ]);
    expect(json.messages[0].text).toBe("hello origin");
    expect(json.messages[2].text).toMatch(/^00000000 {2}00 01 02 ff/);
    const { json: exported } = await inspector(port, "/api/har");
    const socket = exported.log.entries.find((e: { request: { url: string } }) => e.request.url.endsWith("/ws/echo?inspected=1"));
    expect(socket.response.status).toBe(101);
    expect(socket._webSocketMessages.map((m: { type: string; opcode: number }) => `${m.type} ${m.opcode}`)).toEqual([
      "send 1",
      "receive 1",
      "send 2",
      "receive 2",
    ]);
  });

  it("refuses 403 a foreign Host (DNS rebinding) or a foreign Origin, for the page and the API", async () => {
    expect((await inspector(port, "/", { headers: { host: `attacker.example:${port}` } })).status).toBe(403);
    expect((await inspector(port, "/api/requests", { headers: { host: `attacker.example:${port}` } })).status).toBe(403);
    expect((await inspector(port, "/api/requests", { headers: { host: `127.0.0.1:${port + 1}` } })).status).toBe(403);
    expect((await inspector(port, "/api/requests", { headers: { origin: "http://attacker.example" } })).status).toBe(403);
    expect((await inspector(port, "/api/requests", { headers: { "sec-fetch-site": "cross-site" } })).status).toBe(403);
    expect((await inspector(port, "/api/requests", { headers: { "x-forwarded-for": "203.0.113.9" } })).status).toBe(403);
    const seen = origin.requests.length;
    const forged = await inspector(port, "/api/requests/1/replay", {
      method: "POST",
      headers: { origin: "http://attacker.example" },
      body: {},
    });
    expect(forged.status).toBe(403);
    const form = await inspector(port, "/api/requests/1/replay", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(form.status).toBe(415);
    expect(origin.requests.length).toBe(seen);
    const page = await inspector(port, "/", { headers: { host: `localhost:${port}` } });
    expect(page.status).toBe(200);
    expect(page.headers["content-security-policy"]).toContain("frame-ancestors 'none'");
    expect((await inspector(port, "/api/requests", { headers: { origin: `http://127.0.0.1:${port}` } })).status).toBe(200);
  });

  it("never takes its tunnel's origin port, so that visitors cannot reach it", async () => {
    const shared = await freePort();
    const own = await AgentProcess.start("node", [...tunnelArgs(shared, relay, "self-inspected"), "--inspect", String(shared)]);
    try {
      const url = /inspector: http:\/\/127\.0\.0\.1:(\d+)/.exec(own.output);
      expect(Number(url?.[1])).toBeGreaterThan(shared);
      const visitor = await visit(at(own.url, "/api/requests"));
      expect(visitor.status).toBe(502);
      expect(visitor.body.toString()).not.toContain("self-inspected");
    } finally {
      await own.stop("SIGINT");
    }
  });

  it("keeps only the last --inspect-keep requests", async () => {
    const own = await freePort();
    const few = await AgentProcess.start("node", [
      ...tunnelArgs(origin.port, relay, "forgetful"),
      "--inspect",
      String(own),
      "--inspect-keep",
      "3",
    ]);
    try {
      for (let i = 1; i <= 5; i++) await visit(at(few.url, `/echo?keep=${i}`));
      await entryWhere(own, (e) => e.path === "/echo?keep=5" && e.state === "done");
      const { json } = await inspector(own, "/api/requests");
      expect(json.map((e: { path: string }) => e.path)).toEqual(["/echo?keep=5", "/echo?keep=4", "/echo?keep=3"]);
      const gone = await inspector(own, `/api/requests/${json[2].id - 1}`);
      expect(gone.status).toBe(404);
      expect(gone.json.error).toContain("no longer kept (the inspector keeps 3)");
    } finally {
      await few.stop("SIGINT");
    }
  });

  it("serves nothing with --inspect false: the agent listens on no port at all", async () => {
    const quiet = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "uninspected"), "--inspect", "false"]);
    try {
      expect(quiet.output).not.toContain("inspector:");
      expect((await visit(at(quiet.url, "/echo?off=1"))).status).toBe(200);
      // Listening sockets of the agent's process, from `ss` (iproute2, which the suite's CI installs).
      const listening = execFileSync("ss", ["-Hltnp"], { encoding: "utf8" })
        .split("\n")
        .filter((line) => line.includes(`pid=${quiet.runtimePid},`));
      expect(listening).toEqual([]);
      const inspected = execFileSync("ss", ["-Hltnp"], { encoding: "utf8" })
        .split("\n")
        .filter((line) => line.includes(`pid=${agent.runtimePid},`));
      expect(inspected.join("\n")).toContain(`127.0.0.1:${port} `);
    } finally {
      await quiet.stop("SIGINT");
    }
  });

  it("takes the next free port when its port is taken, and warns when it listens beyond loopback", async () => {
    const taken = await freePort();
    const squatter = net.createServer().listen(taken, "127.0.0.1");
    await new Promise((resolve) => squatter.once("listening", resolve));
    const moved = await AgentProcess.start("node", [...tunnelArgs(origin.port, relay, "moved"), "--inspect", String(taken)]);
    const wide = await AgentProcess.start("node", [
      ...tunnelArgs(origin.port, relay, "wide"),
      "--inspect",
      `0.0.0.0:${await freePort()}`,
    ]);
    try {
      const url = /inspector: http:\/\/127\.0\.0\.1:(\d+)/.exec(moved.output);
      expect(Number(url?.[1])).toBeGreaterThan(taken);
      expect((await inspector(Number(url![1]), "/api/requests")).status).toBe(200);
      expect(wide.output).toMatch(/warning: the inspector listens on http:\/\/0\.0\.0\.0:\d+: anyone who can reach this machine/);
    } finally {
      await Promise.all([moved.stop("SIGINT"), wide.stop("SIGINT")]);
      squatter.close();
    }
  });

  it.each<RuntimeName>(["bun", "deno"])("serves the same inspector from a %s agent", async (runtime) => {
    const own = await freePort();
    const other = await AgentProcess.start(runtime, [
      ...tunnelArgs(origin.port, relay, `inspected-${runtime}`),
      "--inspect",
      String(own),
    ]);
    try {
      expect(other.output).toContain(`inspector: http://127.0.0.1:${own}`);
      await visit(at(other.url, "/echo?runtime=1"), { method: "POST", body: Buffer.from('{"x":1}') });
      const entry = await entryWhere(own, (e) => e.path === "/echo?runtime=1" && e.state === "done");
      const replayed = await inspector(own, `/api/requests/${entry.id}/replay`, { method: "POST", body: { body: "again" } });
      expect(replayed.status).toBe(202);
      expect(await entryWhere(own, (e) => e.id === replayed.json.id && e.state === "done")).toMatchObject({ status: 200 });
      expect((await inspector(own, "/", { headers: { host: `evil.example:${own}` } })).status).toBe(403);
    } finally {
      await other.stop("SIGINT");
    }
  });
});
