import { streamSuite } from "./_streams.ts";
import { tunnelSuite } from "./_suite.ts";
import { websocketSuite } from "./_websockets.ts";

tunnelSuite("bun");
streamSuite("bun");
websocketSuite("bun");
