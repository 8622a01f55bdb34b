// The Worker's entry: every request goes to the relay's front (../core/front.ts) with the
// visitor's address as Cloudflare tells it.
import { handleRequest } from "../core/front.ts";
import { clientAddress } from "../core/headers.ts";
import type { Env } from "./env.ts";
import { relayHost } from "./host.ts";

export { GateObject } from "./gate-object.ts";
export { TunnelObject } from "./tunnel-object.ts";

export default {
  fetch: (request, env) => handleRequest(request, relayHost(env), clientAddress(request.headers, request.cf)),
} satisfies ExportedHandler<Env>;
