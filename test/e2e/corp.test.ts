import { corpSuite } from "./_corp.ts";

// One file for the three runtimes and the executable, run one after the other: each block
// starts its own relay and a network namespace (and proxy) per scenario, and the
// timing-sensitive scenarios (events one by one, connections cut every few seconds) stay honest
// on a 2-core machine while vitest runs one other file beside this one.
corpSuite("node");
corpSuite("bun");
corpSuite("deno");
// The executable, copied alone into a directory: proxies, --ca, both transports and doctor.
corpSuite("executable");
