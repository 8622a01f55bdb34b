import { tunnelSuite } from "./_suite.ts";

tunnelSuite("bun");
