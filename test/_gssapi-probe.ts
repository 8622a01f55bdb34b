// Run by Bun or Deno (test/agent/gssapi.test.ts): asks the system's GSSAPI, through the agent's
// own binding and that runtime's FFI adapter, for a Negotiate token for the service in argv,
// and prints one JSON line: the token (base64) and the identity, or the error.
import { openGssapi } from "../agent/src/net/proxy-auth/gssapi.ts";
import type { Ffi } from "../agent/src/runtime.ts";

declare const Deno: { args: string[] } | undefined;
const deno = typeof Deno !== "undefined";
const args = deno ? Deno!.args : process.argv.slice(2);
// By a computed path: the adapters use Bun's and Deno's own globals, which the tests'
// TypeScript (Node's types) does not know; the runtime that runs this file does.
const adapter = await import(`../agent/bin/_${deno ? "deno" : "bun"}-ffi.ts`);
const ffi: Ffi = deno ? adapter.denoFfi() : adapter.bunFfi;
const gssapi = openGssapi(ffi);
const identity = gssapi.identity();
try {
  const token = gssapi.initiate(args[0]!);
  console.log(JSON.stringify({ token: btoa(String.fromCharCode(...token)), identity }));
} catch (error) {
  console.log(
    JSON.stringify({ error: (error as Error).message, noTicket: (error as { noTicket?: boolean }).noTicket, identity }),
  );
} finally {
  gssapi.close();
}
