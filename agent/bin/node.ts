// Node: signals and the environment through `process`. The connection to the relay (proxy,
// TLS, WebSocket or HTTPS transport) is the agent's own, over node:net and node:tls, the same
// on every runtime.
import process from "node:process";
import { main } from "../src/cli.ts";
import type { Runtime } from "../src/runtime.ts";
import { processTerminal } from "./_process-terminal.ts";

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
