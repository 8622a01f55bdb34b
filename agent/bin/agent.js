#!/usr/bin/env node
// The `agent` and `burrow-agent` bins, in plain JavaScript because Node 20 cannot run
// TypeScript. `npx agent` runs it under Node and `bunx --bun agent` under Bun; it hands over to
// that runtime's entry. `burrow-agent` is the package's name, so that `npx burrow-agent` and
// `bunx burrow-agent` outside a project run this package (npx and bunx run the bin named like
// the package), where `npx agent` would fetch an unrelated package called agent.
// This is the one place that asks which runtime it is on.
import { existsSync } from "node:fs";

const runtime = globalThis.Bun ? "bun" : globalThis.Deno ? "deno" : "node";
// The published package holds the bundles in dist/ (made by `npm pack`) and no sources. A clone
// has the sources, and runs them even when a dist/ is left over from a pack.
if (!existsSync(new URL("../src/cli.ts", import.meta.url))) {
  await import(`../dist/${runtime}.js`);
} else if (runtime === "node") {
  const { register } = await import("node:module");
  register("./_ts-hooks.js", import.meta.url);
  await import("./node.ts");
} else {
  await import(`./${runtime}.ts`);
}
