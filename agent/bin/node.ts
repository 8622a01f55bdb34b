// Node: signals and the environment through `process`. The connection to the relay (proxy,
// TLS, WebSocket or HTTPS transport) is the agent's own, over node:net and node:tls, the same
// on every runtime.
import process from "node:process";
import v8 from "node:v8";
import { main } from "../src/cli.ts";
import type { Runtime } from "../src/runtime.ts";
import { processTerminal } from "./_process-terminal.ts";

// Bytes in flight are socket buffers: an ArrayBuffer per read, freed young. V8 sweeps freed
// ArrayBuffers on a background thread and counts them as external memory until that sweep is
// done, so a busy tunnel (a TCP stream at 150 MB/s) looked to it like 64 MB of external memory
// every few hundred milliseconds and got a full mark-compact each time: 13-25 per 256 MiB with
// a 10 MB heap, a quarter of the agent's CPU. Swept with the scavenge that freed them, 2-4.
// The flag is in every V8 from Node 20's (11.3) to 15.0.
v8.setFlagsFromString("--no-concurrent-array-buffer-sweeping");

const runtime: Runtime = {
  description: `node ${process.versions.node}`,
  env: (name) => process.env[name],
  onStop(handler) {
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
    process.on("SIGHUP", handler);
  },
  exit: (code) => process.exit(code),
  terminal: processTerminal,
  // `agent relay` only.
  relayServer: async () => (await import("@burrow/edge/selfhost/node")).serveNode,
};

runtime.exit(await main(runtime, process.argv.slice(2)));
