#!/usr/bin/env node
// The `agent` bin, in plain JavaScript because Node 20 cannot run TypeScript. `npx agent`
// runs it under Node and `bunx --bun agent` under Bun; it hands over to that runtime's entry.
// This is the one place that asks which runtime it is on.
if (globalThis.Bun) {
  await import("./bun.ts");
} else if (globalThis.Deno) {
  await import("./deno.ts");
} else {
  const { register } = await import("node:module");
  register("./_ts-hooks.js", import.meta.url);
  await import("./node.ts");
}
