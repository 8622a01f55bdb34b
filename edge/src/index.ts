import { handle } from "./app.ts";

import type { Env } from "./env.ts";

export { GateObject } from "./gate.ts";
export { TunnelObject } from "./tunnel.ts";

export default { fetch: handle } satisfies ExportedHandler<Env>;
