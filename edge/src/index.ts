import { app } from "./app.ts";

export { TunnelObject } from "./tunnel.ts";

export default app;
