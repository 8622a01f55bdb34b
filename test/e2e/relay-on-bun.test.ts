// The shared behaviour suites against the self-hosted relay on Bun, with the Node agent (the
// "selfhost" project runs every shared file against it on Node).
import { streamSuite } from "./_streams.ts";
import { tunnelSuite } from "./_suite.ts";
import { websocketSuite } from "./_websockets.ts";

tunnelSuite("node", "selfhost-bun");
streamSuite("node", "selfhost-bun");
websocketSuite("node", "selfhost-bun");
