import { streamSuite } from "./_streams.ts";
import { tunnelSuite } from "./_suite.ts";

tunnelSuite("bun");
streamSuite("bun");
