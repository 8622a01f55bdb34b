// The HTTP variants `npm run bench` measures (see run.ts): their ids for BENCH_ONLY (beside the
// TCP paths', bench/_tcp-paths.ts), and what each needs started: the origin, nginx, the Durable
// Object floor, Burrow on the Cloudflare relay and on the self-hosted one, and the peers.
import { execFileSync } from "node:child_process";
import http from "node:http";
import { join } from "node:path";
import { AgentProcess, type RuntimeName, tunnelArgs } from "../test/_agent.ts";
import { command, processTree } from "../test/_memory.ts";
import { Child } from "../test/_process.ts";
import { Relay, type RelayLauncher, ROOT } from "../test/_relay.ts";
import type { Target } from "./_measure.ts";
import { startNginx } from "./_nginx.ts";
import { type PeerName, startPeers } from "./_peers.ts";
import { TCP_IDS } from "./_tcp-paths.ts";

/** Bytes each transfer moves (BENCH_BYTES), unless a peer needs less. */
export const BYTES = Number(process.env.BENCH_BYTES ?? 1024 ** 3);

/** The variants' ids, in the order they run. */
const IDS = [
  "direct",
  "nginx",
  "floor-wrangler",
  "floor-workerd",
  "node-wrangler",
  "node-workerd",
  "bun-workerd",
  "deno-workerd",
  "node-https-workerd",
  "selfhost-node",
  "selfhost-bun",
  "selfhost-deno",
  "localtunnel",
  "tunnelmole",
];
export const ONLY = process.env.BENCH_ONLY?.split(",")
  .map((id) => id.trim())
  .filter(Boolean);
for (const id of ONLY ?? []) {
  if (!IDS.includes(id) && !TCP_IDS.includes(id)) {
    throw new Error(`BENCH_ONLY: no variant "${id}"; the ids are ${[...IDS, ...TCP_IDS].join(", ")}`);
  }
}
/** BENCH_AB_TREE: another checkout (a worktree at the commit before a change) whose relay runs too. */
const AB_TREE = process.env.BENCH_AB_TREE;
/** The short commit of a checkout, for a variant's name. */
const treeCommit = (tree: string) =>
  execFileSync("git", ["-C", tree, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
/** Whether the variant `id` runs (all of them without BENCH_ONLY). */
const wanted = (id: string) => !ONLY || ONLY.includes(id);
/** Whether BENCH_ONLY leaves any HTTP variant to run (it may name TCP paths only). */
export const HTTP_WANTED = IDS.some(wanted);

export type Launcher = "wrangler" | "workerd";
export type SelfhostLauncher = Extract<RelayLauncher, `selfhost-${string}`>;

export interface Variant {
  name: string;
  /** "burrow": on the Cloudflare relay (wrangler dev or workerd); "selfhost": on `agent relay`. */
  kind: "direct" | "nginx" | "floor" | "burrow" | "selfhost" | "peer";
  launcher?: RelayLauncher;
  runtime?: RuntimeName;
  peer?: PeerName;
  target: Target;
  /** Processes whose memory is reported: the agent (a peer's client), and the relay's workerd (a peer's server). */
  agentPid?: () => number;
  relayPids?: () => number[];
  /** Transfer size (BENCH_BYTES unless a peer needs less); 0: no transfers (tunnelmole). */
  bytes: number;
  /** Peers only: measurements that failed, by figure, with the first error; not tried again. */
  failed: Map<string, string>;
}

/**
 * Starts what each variant needs (origin, nginx, relays, agents, peers) and returns the
 * variants; `stops` collects how to stop each part, `footnotes` what to print under the table.
 */
export async function setUp(stops: (() => Promise<unknown>)[], footnotes: string[]): Promise<Variant[]> {
  if (!HTTP_WANTED) return [];
  const origin = new Child("origin", process.execPath, [join(ROOT, "bench/_origin.js")], { cwd: ROOT });
  stops.push(() => origin.stop());
  const originPort = Number((await origin.waitFor(/^listening (\d+)/))[1]);
  const local = (port: number): Target => ({ base: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` });
  const common = () => ({ bytes: BYTES, failed: new Map<string, string>() });
  const variants: Variant[] = [];
  if (wanted("direct")) variants.push({ name: "direct", kind: "direct", target: local(originPort), ...common() });

  const nginx = wanted("nginx") ? await startNginx(originPort) : undefined;
  if (nginx) {
    stops.push(nginx.stop);
    variants.push({ name: "nginx", kind: "nginx", target: local(nginx.port), ...common() });
  }
  const workerdOf = (relay: Relay) => () => processTree(relay.pid).filter((pid) => command(pid) === "workerd");
  for (const launcher of ["wrangler", "workerd"] as const) {
    if (!wanted(`floor-${launcher}`)) continue;
    const floor = await Relay.start({ launcher, config: join(ROOT, "bench/floor/wrangler.toml") });
    stops.push(() => floor.dispose());
    variants.push({
      name: `DO floor (${launcher})`,
      kind: "floor",
      launcher,
      target: local(floor.port),
      relayPids: workerdOf(floor),
      ...common(),
    });
  }
  const plan: [RuntimeName, Launcher, "websocket" | "https", tree?: string][] = [
    ["node", "wrangler", "websocket"],
    ["node", "workerd", "websocket"],
    ["bun", "workerd", "websocket"],
    ["deno", "workerd", "websocket"],
    ["node", "workerd", "https"],
  ];
  // An A/B in the same rounds: the relay of another checkout (its wrangler.toml and sources),
  // with this checkout's Node agent, right after this one's.
  if (AB_TREE) plan.splice(2, 0, ["node", "workerd", "websocket", AB_TREE]);
  for (const [runtime, launcher, transport, tree] of plan) {
    if (!wanted(`${runtime}${transport === "https" ? "-https" : ""}-${launcher}`)) continue;
    // One relay per agent, so that each relay's memory is its own tunnel's.
    const config = tree ? join(tree, "wrangler.toml") : undefined;
    const relay = await Relay.start({ launcher, config });
    stops.push(() => relay.dispose());
    const agent = await AgentProcess.start(runtime, [
      ...tunnelArgs(originPort, relay, `bench-${runtime}-${transport}${tree ? "-ab" : ""}`),
      "--transport",
      transport,
    ]);
    stops.push(() => agent.stop("SIGINT"));
    const url = new URL(agent.url);
    variants.push({
      name: `Burrow ${runtime}${transport === "https" ? " https" : ""} (${launcher}${tree ? `, ${treeCommit(tree)}` : ""})`,
      kind: "burrow",
      launcher,
      runtime,
      target: { base: `http://127.0.0.1:${url.port}`, host: url.host },
      agentPid: () => agent.runtimePid,
      relayPids: workerdOf(relay),
      ...common(),
    });
  }
  // The self-hosted relay (`agent relay`) on each runtime, with the Node agent.
  for (const launcher of ["selfhost-node", "selfhost-bun", "selfhost-deno"] as const satisfies SelfhostLauncher[]) {
    if (!wanted(launcher)) continue;
    const relay = await Relay.start({ launcher });
    stops.push(() => relay.dispose());
    const agent = await AgentProcess.start("node", tunnelArgs(originPort, relay, `bench-${launcher}`));
    stops.push(() => agent.stop("SIGINT"));
    const url = new URL(agent.url);
    variants.push({
      name: `Burrow node (${launcher})`,
      kind: "selfhost",
      launcher,
      runtime: "node",
      target: { base: `http://127.0.0.1:${url.port}`, host: url.host },
      agentPid: () => agent.runtimePid,
      // `agent relay` itself (under Deno, `deno task` and the `deno run` it starts).
      relayPids: () => processTree(relay.pid),
      ...common(),
    });
  }
  // The peers on the same origin (bench/_peers.ts). They never fail the bench: a missing one is said.
  const peerIds = (["localtunnel", "tunnelmole"] as const).filter(wanted);
  if (peerIds.length === 0) return variants;
  const peers = await startPeers(originPort);
  stops.push(peers.stop);
  for (const note of peers.notes) console.log(note);
  footnotes.push(...peers.notes);
  // localtunnel's tunnel stops answering after about two idle minutes (seen here: every request
  // then fails at once), and the other variants take longer than that: a small request every
  // 15 s through each peer keeps it as a user's would be, in use.
  const keepWarm = setInterval(() => {
    for (const { target } of peers.peers) {
      http.get(`${target.base}/small`, { headers: { host: target.host } }, (r) => r.resume()).on("error", () => {});
    }
  }, 15_000);
  stops.push(async () => clearInterval(keepWarm));
  if (peers.peers.some((peer) => peer.name === "localtunnel")) {
    footnotes.push(
      "localtunnel: kept in use by a small request every 15 s between its turns (idle for two minutes, its tunnel stops answering)",
    );
  }
  for (const peer of peers.peers) {
    if (!wanted(peer.name)) continue;
    variants.push({
      name: peer.name,
      kind: "peer",
      peer: peer.name,
      target: peer.target,
      agentPid: () => peer.clientPid,
      relayPids: () => [peer.serverPid],
      ...common(),
      // tunnelmole buffers whole bodies in one WebSocket message: small requests only.
      bytes: peer.name === "tunnelmole" ? 0 : BYTES,
    });
  }
  return variants;
}
