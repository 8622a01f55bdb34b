// The shared behaviour suites against the self-hosted relay on Deno, with the Node agent (the
// "selfhost" project runs every shared file against it on Node).
import { streamSuite } from "./_streams.ts";
import { tunnelSuite } from "./_suite.ts";
import { websocketSuite } from "./_websockets.ts";

tunnelSuite("node", "selfhost-deno");
streamSuite("node", "selfhost-deno");
websocketSuite("node", "selfhost-deno");
