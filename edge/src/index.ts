import { app } from "./app.ts";

export { GateObject } from "./gate.ts";
export { TunnelObject } from "./tunnel.ts";

export default app;
