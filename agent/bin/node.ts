// Node: no WebSocket client before Node 22, so the `ws` package provides one (its WebSocket
// class follows the WHATWG interface the agent uses). Permessage-deflate is off: bodies are
// mostly compressed already, and deflating every frame costs CPU on both ends.
import process from "node:process";
import { WebSocket } from "ws";
import { main } from "../src/cli.ts";
import type { Runtime } from "../src/runtime.ts";

const runtime: Runtime = {
  description: `node ${process.versions.node}`,
  openWebSocket: (url) => new WebSocket(url, { perMessageDeflate: false }),
  env: (name) => process.env[name],
  onStop(handler) {
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  },
  exit: (code) => process.exit(code),
};

runtime.exit(await main(runtime, process.argv.slice(2)));
