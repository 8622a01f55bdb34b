#!/usr/bin/env node
// `npm run relay`: the relay alone on local workerd (wrangler dev, http://localhost:8787, or
// BURROW_RELAY_PORT), for agents started by hand. `npm run dev` is this plus an agent.
import { portInUse, startRelay, stopOnExit } from "./_relay.js";

const port = process.env.BURROW_RELAY_PORT ?? "8787";
if (await portInUse(port)) {
  console.error(`error: port ${port} is in use, so the relay cannot listen on http://localhost:${port}`);
  console.error("  hint: stop what uses it (another `npm run relay` or `npm run dev`?) or set BURROW_RELAY_PORT to another port");
  process.exit(1);
}
const relay = startRelay({ port, extra: process.argv.slice(2) });
stopOnExit(relay);
let stopping = false;

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    stopping = true;
    void relay.stop("SIGTERM");
  });
}

const status = await relay.exited;
if (!stopping) {
  console.error(`error: the relay stopped (wrangler dev exited with ${status})`);
  console.error(
    relay.ready
      ? "  hint: its lines above say why; run `npm run relay` again"
      : `  hint: is port ${port} already in use? Set BURROW_RELAY_PORT to use another`,
  );
}
process.exitCode = stopping ? 0 : 1;
