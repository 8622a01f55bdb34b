// The test origin as a process of its own, for tests that need it somewhere the test process is
// not (inside a network namespace, see test/_corp.ts):
//   node --import ./scripts/register-ts.js test/_origin-main.ts
// Prints "origin listening on <port>" (127.0.0.1) and serves until it is signalled. A port as
// the first argument listens there (to start an origin again where it was).
import { Origin } from "./_origin.ts";

const origin = await Origin.start(Number(process.argv[2] ?? 0));
console.log(`origin listening on ${origin.port}`);
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => void origin.close().finally(() => process.exit(0)));
}
