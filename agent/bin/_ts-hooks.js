// Node 20 module hooks that let the Node entry import the agent's TypeScript sources: esbuild
// strips the types of each `.ts` file as it loads (a few ms per file, no build step to forget).
import { readFile } from "node:fs/promises";
import { transform } from "esbuild";

/** @type {import("node:module").LoadHook} */
export async function load(url, context, nextLoad) {
  if (!url.startsWith("file:") || !url.endsWith(".ts")) return nextLoad(url, context);
  const source = await readFile(new URL(url), "utf8");
  const { code } = await transform(source, {
    loader: "ts",
    format: "esm",
    target: "esnext", // strip types only; Node 20 runs the rest as written
    sourcemap: "inline",
    sourcefile: url,
  });
  return { format: "module", source: code, shortCircuit: true };
}
