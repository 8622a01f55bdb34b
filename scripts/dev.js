#!/usr/bin/env node
// `npm run dev -- --port 8000`: Burrow on one machine. Starts the relay on local workerd
// (wrangler dev, http://localhost:8787; see _relay.js) and, once it is ready, an agent for the
// local server; the agent prints the public URL. Arguments go to the agent (see `npx agent
// --help`, run from this clone). If either stops, so does the other, and so does this.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { portInUse, ROOT, startRelay, stopOnExit } from "./_relay.js";

const relayPort = process.env.BURROW_RELAY_PORT ?? "8787";
const args = process.argv.slice(2);
let agent;
let stopping = false;

if (await portInUse(relayPort)) {
  console.error(`error: port ${relayPort} is in use, so the relay cannot listen on http://localhost:${relayPort}`);
  console.error(
    `  hint: stop what uses it (another \`npm run dev\` or \`npm run relay\`?) or set BURROW_RELAY_PORT to another port; --port is the local server's`,
  );
  process.exit(1);
}

const relay = startRelay({ port: relayPort, onReady: startAgent });
stopOnExit(relay);

function startAgent() {
  const env = { ...process.env, BURROW_RELAY: process.env.BURROW_RELAY ?? `http://localhost:${relayPort}` };
  agent = spawn(process.execPath, [join(ROOT, "agent/bin/agent.js"), ...args], { cwd: ROOT, env, stdio: "inherit" });
  agent.on("exit", async (code, signal) => {
    stopping = true;
    await relay.stop("SIGTERM");
    process.exitCode ??= code ?? (signal === "SIGINT" ? 130 : 1);
  });
}

void relay.exited.then((status) => {
  if (stopping) return;
  stopping = true;
  if (relay.ready) {
    console.error(`error: the relay stopped (wrangler dev exited with ${status}); stopping the agent`);
    console.error("  hint: its lines above say why; run `npm run dev` again");
  } else {
    console.error(`error: the relay (wrangler dev) exited with ${status} before it was ready`);
    console.error(`  hint: is port ${relayPort} already in use? Set BURROW_RELAY_PORT to use another`);
  }
  process.exitCode = 1;
  void relay.stop("SIGKILL"); // what is left of its group: a workerd whose wrangler was killed
  // The agent's own exit (above) keeps our status: it was not the cause.
  agent?.kill("SIGTERM");
});

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    stopping = true;
    // The agent is in our group and gets the terminal's Ctrl-C too (twice within a second is
    // one keypress to it); a kill reaches only us. The relay stops once the agent has.
    if (agent && agent.exitCode === null) agent.kill(signal);
    else void relay.stop("SIGTERM");
  });
}
