#!/usr/bin/env node
// `npm pack -w agent` runs this (prepack): one self-contained ESM file per runtime entry in
// dist/, with @burrow/protocol, @msgpack/msgpack, ws and smol-toml inside, so that the published package
// has no dependencies and needs neither TypeScript nor esbuild when it runs. postpack removes
// dist/ again; in a clone the sources run (bin/agent.js), never a stale bundle.
// The PAC sandbox and QuickJS (~900 KB, most of it the engine's wasm) are a file of their own,
// dist/pac-sandbox.js, shared by the three entries and imported only when a PAC file is used.
import { rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const agent = join(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = join(agent, "dist");

if (process.argv[2] === "--clean") {
  rmSync(outdir, { recursive: true, force: true });
  process.exit(0);
}

/** The sources' `import("./sandbox.ts")` (agent/src/net/pac/pac.ts) becomes dist/pac-sandbox.js. */
const sandboxApart = {
  name: "pac-sandbox-apart",
  setup(build) {
    build.onResolve({ filter: /^\.\/sandbox\.ts$/ }, () => ({ path: "./pac-sandbox.js", external: true }));
  },
};

rmSync(outdir, { recursive: true, force: true });
const common = {
  outdir,
  bundle: true,
  format: "esm",
  platform: "node",
  // Node 20.6 is the oldest runtime the package supports (engines); Bun and Deno run ES2022.
  target: ["node20.6", "es2022"],
  // ws loads its native helpers with require() inside a try/catch and runs without them: left
  // out, utf-8-validate's require fails and ws validates in JavaScript. bufferutil is ours,
  // bundled (see the alias). bun:ffi is Bun's own module (Negotiate's GSSAPI, in the Bun entry only).
  external: ["utf-8-validate", "bun:ffi"],
  // ws is CommonJS: its require("events") etc. need a real require in an ES module, on
  // Node, Bun and Deno alike.
  banner: {
    js: 'import { createRequire as __burrowRequire } from "node:module";\nconst require = __burrowRequire(import.meta.url);',
  },
  // One ws for the agent's client and the relay's server (edge/ has its own copy in a clone), and
  // ws's masking helpers a word at a time (edge/src/selfhost/ws-bufferutil, a workspace in a clone).
  alias: {
    ws: dirname(createRequire(join(agent, "package.json")).resolve("ws/package.json")),
    bufferutil: join(agent, "../edge/src/selfhost/ws-bufferutil/index.cjs"),
  },
  legalComments: "eof",
  logLevel: "warning",
};
await build({
  ...common,
  entryPoints: ["node", "bun", "deno"].map((runtime) => join(agent, `bin/${runtime}.ts`)),
  plugins: [sandboxApart],
});
await build({ ...common, entryPoints: { "pac-sandbox": join(agent, "src/net/pac/sandbox.ts") } });
