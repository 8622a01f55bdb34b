// The same behaviour suites as node.test.ts, with the agent on the HTTPS transport (long polls
// and bounded POSTs instead of a WebSocket): visitors must not be able to tell the difference.
import { useTransport } from "../_agent.ts";
import { streamSuite } from "./_streams.ts";
import { tunnelSuite } from "./_suite.ts";
import { websocketSuite } from "./_websockets.ts";

useTransport("https");
tunnelSuite("node");
streamSuite("node");
websocketSuite("node");
