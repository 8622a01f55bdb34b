// QuickJS in WebAssembly, the PAC sandbox's engine: quickjs-emscripten's sync build with the
// wasm embedded in the module (no file to find at run time, on Node, Bun, Deno or inside the
// executable). Part of dist/pac-sandbox.js, which only a PAC file loads (sandbox.ts).
import variant from "@jitl/quickjs-singlefile-mjs-release-sync";
import { newQuickJSWASMModuleFromVariant, type QuickJSWASMModule } from "quickjs-emscripten-core";

export type { QuickJSContext, QuickJSHandle, QuickJSWASMModule } from "quickjs-emscripten-core";

export function loadQuickJs(): Promise<QuickJSWASMModule> {
  return newQuickJSWASMModuleFromVariant(variant);
}
