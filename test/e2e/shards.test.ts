import { mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CloseCode, FrameType } from "@burrow/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../_agent.ts";
import { canCut, connectionsTo, cut } from "../_cut.ts";
import { Origin } from "../_origin.ts";
import { RawAgent } from "../_raw-agent.ts";
import { Relay } from "../_relay.ts";
import { at, dialOptions, visit } from "../_visit.ts";

// One tunnel on several Durable Objects (`--connections N`): the agent opens N connections,
// each to its own shard of the tunnel, and the relay's Worker spreads visitors over the shards
// whose connection is up. Each request's JSON log line names the connection that carried it.

const TOKEN = "shard-owner-token-0123";
const OTHER = "someone-elses-token-456";

interface Served {
  connection?: number;
  status: number | string;
}

/** An agent with `--log json`; resolves once its first connection and `connections - 1` more are up. */
async function startAgent(runtime: RuntimeName, args: string[], connections: number): Promise<AgentProcess> {
  const agent = new AgentProcess(runtime, [...args, "--connections", String(connections), "--log", "json"]);
  const up = await agent.waitFor(/"event":"up".*"url":"([^"]+)"/);
  agent.url = up[1]!;
  for (let k = 1; k < connections; k++) await agent.waitFor(new RegExp(`"event":"connection-up".*"connection":${k}\\b`));
  return agent;
}

/** The request lines the agent printed after line `from`, once there are `count` of them. */
async function served(agent: AgentProcess, from: number, count: number): Promise<Served[]> {
  const lines = () => agent.lines.slice(from).filter((line) => line.includes('"event":"request"'));
  const deadline = Date.now() + 10_000;
  while (lines().length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  return lines().map((line) => JSON.parse(line) as Served);
}

/** `count` GETs of `path`, `parallel` at a time; their statuses. */
async function many(url: string, path: string, count: number, parallel: number, headers: Record<string, string> = {}) {
  const statuses: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        next++;
        const { status, body } = await visit(at(url, path), { headers });
        statuses.push(status);
        if (status === 200 && path.startsWith("/bytes/")) expect(body.length).toBe(Number(path.slice(7)));
      }
    }),
  );
  return statuses;
}

const connectionsOf = (lines: Served[]) => new Set(lines.map((line) => line.connection));

describe("one tunnel on several Durable Objects (--connections)", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  it.each(["node", "bun", "deno"] as const)("on %s, spreads visitors over the three connections' shards", async (runtime) => {
    const agent = await startAgent(runtime, tunnelArgs(origin.port, relay, `spread-${runtime}`), 3);
    try {
      const from = agent.lines.length;
      const statuses = await many(agent.url, "/bytes/1000", 90, 6);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      const lines = await served(agent, from, 90);
      expect(lines).toHaveLength(90);
      // Uniform over 3 live shards, 90 requests: each gets some (P(one gets none) < 1e-15).
      expect([...connectionsOf(lines)].sort()).toEqual([0, 1, 2]);
    } finally {
      await agent.stop("SIGINT");
    }
  });

  it("learns the live shards on shard 0's answers: visitors never see the field, and an origin's own cannot steer", async () => {
    // An origin that answers every request with the relay's field, naming shard 0 alone.
    const steering = http.createServer((_request, response) => {
      response.writeHead(200, { "x-burrow-shards": "0", "content-type": "text/plain" });
      response.end("ok");
    });
    await new Promise<void>((resolve) => steering.listen(0, "127.0.0.1", resolve));
    const port = (steering.address() as { port: number }).port;
    const agent = await startAgent("node", tunnelArgs(port, relay, "spread-steer"), 3);
    try {
      const from = agent.lines.length;
      // Over several SHARDS_TTL_MS, so that the Worker learns more than once.
      const seen: string[] = [];
      for (let round = 0; round < 3; round++) {
        const visits = await Promise.all(Array.from({ length: 30 }, () => visit(at(agent.url, "/"))));
        for (const { status, rawHeaders } of visits) {
          expect(status).toBe(200);
          seen.push(...rawHeaders.filter((_, i) => i % 2 === 0 && rawHeaders[i]!.toLowerCase() === "x-burrow-shards"));
        }
        if (round < 2) await new Promise((resolve) => setTimeout(resolve, 2100));
      }
      expect(seen).toEqual([]);
      expect([...connectionsOf(await served(agent, from, 90))].sort()).toEqual([0, 1, 2]);
    } finally {
      await agent.stop("SIGINT");
      await new Promise((resolve) => steering.close(resolve));
    }
  });

  it("passes a gzip body on as the origin encoded it on the visits that ask shard 0, with one connection or three", async () => {
    const { gunzipSync } = await import("node:zlib");
    for (const connections of [1, 3]) {
      const agent = await startAgent("node", tunnelArgs(origin.port, relay, `gzip-asks-${connections}`), connections);
      try {
        // The Worker never saw this tunnel: its first visit asks (ShardMap.route), and so does
        // the first after SHARDS_TTL_MS.
        for (const wait of [0, 2100]) {
          await new Promise((resolve) => setTimeout(resolve, wait));
          const response = await visit(at(agent.url, "/gzip"), { headers: { "accept-encoding": "gzip" } });
          expect(response.headers["content-encoding"]).toBe("gzip");
          expect(response.headers["x-burrow-shards"]).toBeUndefined();
          expect(gunzipSync(response.body).toString()).toBe("compressed hello ".repeat(100));
        }
      } finally {
        await agent.stop("SIGINT");
      }
    }
  });

  it("spreads over the HTTPS transport's sessions too", async () => {
    const agent = await startAgent("node", [...tunnelArgs(origin.port, relay, "spread-https"), "--transport", "https"], 2);
    try {
      const from = agent.lines.length;
      expect((await many(agent.url, "/bytes/1000", 40, 4)).filter((s) => s !== 200)).toEqual([]);
      expect([...connectionsOf(await served(agent, from, 40))].sort()).toEqual([0, 1]);
    } finally {
      await agent.stop("SIGINT");
    }
  });

  it("carries a large download and upload whole on every shard, and visitor WebSockets", async () => {
    const agent = await startAgent("node", tunnelArgs(origin.port, relay, "spread-bulk"), 3);
    try {
      const size = 8 * 1024 * 1024;
      const downloads = await Promise.all(Array.from({ length: 6 }, () => visit(at(agent.url, `/bytes/${size}`))));
      for (const { status, body } of downloads) {
        expect(status).toBe(200);
        expect(body.length).toBe(size);
      }
      const body = Buffer.alloc(4 * 1024 * 1024, 7);
      const uploads = await Promise.all(Array.from({ length: 6 }, () => visit(at(agent.url, "/echo"), { method: "POST", body })));
      for (const upload of uploads) expect(JSON.parse(upload.body.toString()).length).toBe(body.length);
      for (let i = 0; i < 6; i++) {
        const target = new URL(at(agent.url, "/ws/echo").replace(/^http/, "ws"));
        const host = target.host;
        target.hostname = "127.0.0.1";
        const socket = new WebSocket(target.href, { headers: { host } });
        await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
        const echoed = new Promise<string>((resolve) => socket.once("message", (data) => resolve(String(data))));
        socket.send(`hello ${i}`);
        expect(await echoed).toBe(`hello ${i}`);
        socket.close();
      }
    } finally {
      await agent.stop("SIGINT");
    }
  });

  it("holds every shard to the tunnel's visitor rules", async () => {
    const agent = await startAgent(
      "node",
      [...tunnelArgs(origin.port, relay, "spread-rules"), "--basic-auth", "ada:lovelace-secret"],
      3,
    );
    try {
      const from = agent.lines.length;
      const refused = await many(agent.url, "/bytes/10", 45, 5);
      expect(new Set(refused)).toEqual(new Set([401]));
      const authorization = `Basic ${Buffer.from("ada:lovelace-secret").toString("base64")}`;
      const let_in = await many(agent.url, "/bytes/10", 45, 5, { authorization });
      expect(new Set(let_in)).toEqual(new Set([200]));
      // The 401s never reached the agent; the 45 that did came over every connection.
      const lines = await served(agent, from, 45);
      expect(lines).toHaveLength(45);
      expect([...connectionsOf(lines)].sort()).toEqual([0, 1, 2]);
    } finally {
      await agent.stop("SIGINT");
    }
  });

  it("takes connections from burrow.toml, and refuses a count out of range (exit 2)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "burrow-shards-"));
    const file = join(dir, "burrow.toml");
    writeFileSync(file, `relay = "${relay.url}"\n\n[[tunnel]]\nname = "from-file"\nport = ${origin.port}\nconnections = 2\n`);
    // (A --connections flag would override the file's.)
    const agent = new AgentProcess("node", ["--config", file, "--log", "json"]);
    try {
      await agent.waitFor(/"event":"up"/);
      await agent.waitFor(/"event":"connection-up".*"connection":1\b/);
    } finally {
      await agent.stop("SIGINT");
    }
    for (const count of ["0", "17", "2.5"]) {
      const refused = new AgentProcess("node", [...tunnelArgs(origin.port, relay, "too-many"), "--connections", count]);
      expect(await refused.exited).toBe(2);
      expect(refused.output).toContain(`--connections ${count} is out of range`);
      expect(refused.output).toContain("from 1 to 16");
    }
  });

  it("answers 400 to a connect URL whose shard is not a connection number", async () => {
    for (const shard of ["16", "-1", "1.5", "x", "007"]) {
      const response = await fetch(`http://127.0.0.1:${relay.port}/_burrow/connect?name=bad-shard&shard=${shard}`, {
        headers: { host: `localhost:${relay.port}` },
      });
      expect(response.status, shard).toBe(400);
      expect(await response.text()).toContain("--connections is at most 16");
    }
  });

  it("keeps serving, with no failure, while one connection is cut again and again", async () => {
    if (!(await canCut())) return;
    const agent = await startAgent("node", [...tunnelArgs(origin.port, relay, "spread-cuts"), "--heartbeat", "1"], 3);
    try {
      let cuts = 0;
      let cutting = true;
      const cutter = (async () => {
        while (cutting) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          const local = (await connectionsTo(agent.runtimePid, relay.port))[0];
          if (!local || !cutting) continue;
          await cut(local, relay.port);
          cuts++;
        }
      })();
      const from = agent.lines.length;
      const statuses: number[] = [];
      // Requests, 6 at a time, until four cuts have happened among them.
      while (cuts < 4) statuses.push(...(await many(agent.url, "/bytes/2000", 60, 6)));
      cutting = false;
      await cutter;
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      expect(connectionsOf(await served(agent, from, statuses.length)).size).toBe(3);
    } finally {
      await agent.stop("SIGINT");
    }
  });
});

describe("a connection that stays away", () => {
  it.skipIf(process.getuid?.() !== 0)("gets no visitors until it is back; the others serve them all", async () => {
    // Three connects a minute: the agent's three, so the one cut below cannot come back.
    const [relay, origin] = await Promise.all([
      Relay.start({ launcher: "workerd", vars: { CONNECTS_PER_MINUTE: "3" } }),
      Origin.start(),
    ]);
    const agent = await startAgent("node", tunnelArgs(origin.port, relay, "stays-away"), 3);
    try {
      const mine = await connectionsTo(agent.runtimePid, relay.port);
      expect(mine).toHaveLength(3);
      const from = agent.lines.length;
      await cut(mine[0]!, relay.port);
      const statuses: number[] = [];
      const until = Date.now() + 4000;
      while (Date.now() < until) statuses.push(...(await many(agent.url, "/bytes/100", 30, 3)));
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
      await agent.waitFor(/"event":"connection-lost"/, { from });
      await agent.waitFor(/"event":"cannot-connect".*429 rate-limited/, { from });
      // Which one was cut: the connection whose requests stopped.
      const lines = await served(agent, from, statuses.length);
      const late = lines.slice(Math.floor(lines.length / 2));
      expect(connectionsOf(late).size).toBe(2);
    } finally {
      await agent.stop("SIGINT");
      await relay.dispose();
      await origin.close();
    }
  });
});

describe("who may open a tunnel's further shards", () => {
  let relay: Relay;
  let origin: Origin;

  beforeAll(async () => {
    [relay, origin] = await Promise.all([
      Relay.start({ launcher: "workerd", vars: { BURROW_TOKENS: `owner:${TOKEN},other:${OTHER}` } }),
      Origin.start(),
    ]);
  });

  afterAll(async () => {
    await relay?.dispose();
    await origin?.close();
  });

  async function shardHello(name: string, shard: number, token: string) {
    const raw = await RawAgent.open(relay, `${name}&shard=${shard}`);
    raw.send(RawAgent.helloFrame(name, { token }));
    const answer = await raw.next();
    raw.socket.close();
    return answer;
  }

  it("refuses a shard of a name nobody holds, and one of a name another token holds", async () => {
    const waiting = await shardHello("nobody-holds", 1, TOKEN);
    expect(waiting).toMatchObject({ type: FrameType.Refused, code: "shard-waiting" });
    const agent = await startAgent("node", [...tunnelArgs(origin.port, relay, "held"), "--token", TOKEN], 2);
    try {
      const stolen = await shardHello("held", 2, OTHER);
      expect(stolen.type).toBe(FrameType.Refused);
      expect(stolen).toMatchObject({ code: "name-owned" });
      // The owner's tunnel is untouched: both its connections still serve.
      const from = agent.lines.length;
      expect(new Set(await many(agent.url, "/bytes/10", 30, 3))).toEqual(new Set([200]));
      expect([...connectionsOf(await served(agent, from, 30))].sort()).toEqual([0, 1]);
    } finally {
      await agent.stop("SIGINT");
    }
  });

  it("refuses a shard whose hello names another tunnel than its URL: another token cannot drop the owner's shards", async () => {
    // The other token holds a tunnel of its own, and asks its shards 1 and 2 for the owner's
    // name; admitted, their drop would tell the owner's shard 0 that its shards 1 and 2 left.
    const agent = await startAgent("node", [...tunnelArgs(origin.port, relay, "owned-shards"), "--token", TOKEN], 3);
    const own = await RawAgent.hello(relay, "not-theirs", { token: OTHER });
    try {
      for (const shard of [1, 2]) {
        const raw = await RawAgent.open(relay, `not-theirs&shard=${shard}`);
        raw.send(RawAgent.helloFrame("owned-shards", { token: OTHER }));
        const answer = await raw.next();
        const why = 'the hello asks for tunnel "owned-shards" but the connection was opened for "not-theirs"';
        expect(answer).toMatchObject({ type: FrameType.Refused, code: "bad-hello", message: why });
        expect(await raw.closed).toEqual({ code: CloseCode.Refused, reason: `bad-hello: ${why}` });
      }
      // The Worker asks shard 0 for the live shards every SHARDS_TTL_MS (2 s) at most.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const from = agent.lines.length;
      expect(new Set(await many(agent.url, "/bytes/10", 60, 4))).toEqual(new Set([200]));
      expect([...connectionsOf(await served(agent, from, 60))].sort()).toEqual([0, 1, 2]);
    } finally {
      own.socket.close(1000, "stopped");
      await agent.stop("SIGINT");
    }
  });

  it("holds a shard to shard 0's rules, whatever its own hello says", async () => {
    // Raw agents, so that shard 1's hello can carry no rules at all: visitors are refused by
    // shard 0's --allow-ip (no visitor here is in 10.0.0.0/8) on both shards, and no request
    // ever reaches either agent.
    const rules = { basicAuth: [], allowIp: ["10.0.0.0/8"], webhooks: [] };
    const primary = await RawAgent.hello(relay, "rules-held", { token: TOKEN, rules });
    const shard = await RawAgent.open(relay, "rules-held&shard=1");
    shard.send(RawAgent.helloFrame("rules-held", { token: TOKEN }));
    const ready = await shard.next();
    expect(ready.type).toBe(FrameType.Ready);
    try {
      const url = (ready as { url: string }).url;
      // Shard 0 learns of shard 1 from its report; the Worker asks shard 0 every 2 s at most.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      const statuses = await many(url, "/bytes/10", 40, 4);
      expect(new Set(statuses)).toEqual(new Set([403]));
      const heads = [...primary.frames, ...shard.frames].filter((frame) => frame.type === FrameType.RequestHead);
      expect(heads).toEqual([]);
    } finally {
      primary.socket.close();
      shard.socket.close();
    }
  });

  it("drops the shards of an earlier session when the name changes hands, and keeps the new owner's", async () => {
    // An open relay: a clean stop frees the name at once. The first owner's process leaves
    // connection 0 only (a process hung or cut off from shard 0 alone); its shard 1 stays.
    const open = await Relay.start({ launcher: "workerd" });
    const name = "changes-hands";
    const [first, second] = ["claim-of-the-first-owner-0123", "claim-of-the-second-owner-456"];
    try {
      const old0 = await RawAgent.hello(open, name, { claim: first });
      const old1 = await RawAgent.open(open, `${name}&shard=1`);
      old1.send(RawAgent.helloFrame(name, { claim: first }));
      expect((await old1.next()).type).toBe(FrameType.Ready);
      old0.socket.close(1000, "stopped");
      await old0.closed;
      const new0 = await RawAgent.hello(open, name, { claim: second });
      // Shard 1 of the first owner is told to go, and may come back only if shard 0 admits it.
      expect(await old1.closed).toMatchObject({ code: 1012 });
      const again = await RawAgent.open(open, `${name}&shard=1`);
      again.send(RawAgent.helloFrame(name, { claim: first }));
      expect(await again.next()).toMatchObject({ type: FrameType.Refused, code: "name-taken" });
      // The new owner's own shard 1 is admitted under the new session and stays.
      const new1 = await RawAgent.open(open, `${name}&shard=1`);
      new1.send(RawAgent.helloFrame(name, { claim: second }));
      expect((await new1.next()).type).toBe(FrameType.Ready);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(new1.socket.readyState).toBe(WebSocket.OPEN);
      new0.socket.close();
      new1.socket.close();
    } finally {
      await open.dispose();
    }
  });

  it("counts a tunnel of several connections once against TUNNELS_PER_TOKEN", async () => {
    const limited = await Relay.start({ launcher: "workerd", vars: { BURROW_TOKENS: `owner:${TOKEN}`, TUNNELS_PER_TOKEN: "1" } });
    try {
      const agent = await startAgent("node", [...tunnelArgs(origin.port, limited, "one-of-one"), "--token", TOKEN], 4);
      try {
        const response = await new Promise<number>((resolve, reject) =>
          http.get(dialOptions(at(agent.url, "/bytes/5")), (r) => resolve(r.statusCode!)).on("error", reject),
        );
        expect(response).toBe(200);
      } finally {
        await agent.stop("SIGINT");
      }
    } finally {
      await limited.dispose();
    }
  });
});
