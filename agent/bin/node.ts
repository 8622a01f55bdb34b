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
    let stopping = false;
    const stop = () => {
      if (stopping) process.exit(130); // a second Ctrl-C does not wait
      stopping = true;
      handler();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  },
  exit: (code) => process.exit(code),
};

runtime.exit(await main(runtime, process.argv.slice(2)));
