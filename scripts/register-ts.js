// `node --import ./scripts/register-ts.js file.ts`: runs a TypeScript file on Node 20 with the
// agent's own type-stripping hooks (used by the benchmark, which reuses the test harness).
import { register } from "node:module";

register("../agent/bin/_ts-hooks.js", import.meta.url);
