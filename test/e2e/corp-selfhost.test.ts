import { corpSuite } from "./_corp.ts";

// The corporate networks of corp.test.ts with the self-hosted relay outside, serving TLS itself
// on :443: on Bun and on Deno, whose servers are not Node's (the "selfhost" project runs the
// rest against it on Node). The Node agent, as the proxies and TLS are what is tested here; the
// other agents meet them in corp.test.ts. One after the other, as there.
corpSuite("node", "selfhost-bun");
corpSuite("node", "selfhost-deno");
