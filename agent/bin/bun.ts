// Bun: process signals as in Node; Bun runs this TypeScript directly.
import process from "node:process";
import { main } from "../src/cli.ts";
import type { Runtime } from "../src/runtime.ts";
import { processTerminal } from "./_process-terminal.ts";

const runtime: Runtime = {
  description: `bun ${Bun.version}`,
  env: (name) => process.env[name],
  onStop(handler) {
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
    process.on("SIGHUP", handler);
  },
  exit: (code) => process.exit(code),
  terminal: processTerminal,
  // `agent relay` only.
  relayServer: async () => (await import("@burrow/edge/selfhost/bun")).serveBun,
  // bun:ffi, for Negotiate's GSSAPI: loaded when a proxy asks for Negotiate, never before.
  ffi: async () => (await import("./_bun-ffi.ts")).bunFfi,
};

runtime.exit(await main(runtime, process.argv.slice(2)));
