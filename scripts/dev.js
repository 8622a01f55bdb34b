#!/usr/bin/env node
// `npm run dev -- --port 8000`: Burrow on one machine. Starts the relay on local workerd
// (wrangler dev, http://localhost:8787) and, once it is ready, an agent for the local server;
// the agent prints the public URL. Arguments go to the agent (see `npx agent --help`, run from this clone).
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const relayPort = process.env.BURROW_RELAY_PORT ?? "8787";
const args = process.argv.slice(2);

// The closed-network warning about Request.cf, and its stack, say nothing useful here.
const NOISE =
  /\[wrangler:info\] [A-Z]+ \/|Unable to fetch the `Request.cf` object|getaddrinfo ENOTFOUND workers.cloudflare.com|^\s+at |update available/;

const relay = spawn(
  process.execPath,
  [join(root, "node_modules/wrangler/bin/wrangler.js"), "dev", "--port", relayPort, "--show-interactive-dev-session=false"],
  { cwd: root, env: { ...process.env, WRANGLER_SEND_METRICS: "false" }, stdio: ["ignore", "pipe", "pipe"] },
);
let agent;

function relayLines(stream, write) {
  let partial = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    const lines = (partial + chunk).split("\n");
    partial = lines.pop();
    for (const line of lines) {
      if (!agent && /Ready on http/.test(line)) startAgent();
      if (line.trim() && !NOISE.test(line)) write(`relay | ${line}\n`);
    }
  });
}
relayLines(relay.stdout, (line) => process.stdout.write(line));
relayLines(relay.stderr, (line) => process.stderr.write(line));

function startAgent() {
  const env = { ...process.env, BURROW_RELAY: process.env.BURROW_RELAY ?? `http://localhost:${relayPort}` };
  agent = spawn(process.execPath, [join(root, "agent/bin/agent.js"), ...args], { cwd: root, env, stdio: "inherit" });
  agent.on("exit", (code) => {
    relay.kill("SIGTERM");
    process.exitCode = code ?? 1;
  });
}

relay.on("exit", (code) => {
  if (!agent) {
    console.error(`error: the relay (wrangler dev) exited with status ${code} before it was ready`);
    console.error(`  hint: is port ${relayPort} already in use? Set BURROW_RELAY_PORT to use another`);
    process.exitCode = 1;
  }
  agent?.kill("SIGTERM");
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    // The terminal's Ctrl-C reaches both children; a kill reaches only us, so pass it on.
    if (agent) agent.kill(signal);
    else relay.kill(signal);
  });
}
