// QuickJS in WebAssembly, the PAC sandbox's engine: quickjs-emscripten's sync build with the
// wasm embedded in the module (no file to find at run time, on Node, Bun, Deno or inside the
// executable). Imported only when a PAC file is used (sandbox.ts), so the ~830 KB module is never
// parsed otherwise; the package's bundler makes it a file of its own, dist/quickjs.js
// (agent/scripts/bundle.js).
import variant from "@jitl/quickjs-singlefile-mjs-release-sync";
import { newQuickJSWASMModuleFromVariant, type QuickJSWASMModule } from "quickjs-emscripten-core";

export type { QuickJSContext, QuickJSHandle, QuickJSWASMModule } from "quickjs-emscripten-core";

export function loadQuickJs(): Promise<QuickJSWASMModule> {
  return newQuickJSWASMModuleFromVariant(variant);
}
