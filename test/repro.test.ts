import { it } from "vitest";
import { AgentProcess } from "./_agent.ts";
import { memory } from "./_memory.ts";
import { Origin } from "./_origin.ts";
import { Relay } from "./_relay.ts";
import { download, upload } from "./_transfer.ts";
import { at } from "./_visit.ts";

it("repro", async () => {
  const [relay, origin] = await Promise.all([Relay.start({ launcher: "workerd" }), Origin.start()]);
  const agent = await AgentProcess.start("deno", ["--port", String(origin.port), "--relay", relay.url, "--name", "mem"]);
  await download(at(agent.url, `/pattern/${400 * 1024 * 1024}`), 40 * 1024 * 1024);
  console.log("after down", Math.round(memory(agent.runtimePid).peak / 1e6));
  await upload(at(agent.url, `/sink?rate=${40 * 1024 * 1024}`), 400 * 1024 * 1024);
  console.log("after up", Math.round(memory(agent.runtimePid).peak / 1e6));
  await agent.stop("SIGINT");
  await relay.dispose();
  await origin.close();
}, 300_000);
