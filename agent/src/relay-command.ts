import { AgentError } from "./errors.ts";
import type { Runtime } from "./runtime.ts";

/**
 * `agent relay`: the self-hosted relay (edge/src/selfhost/), in the package users already have.
 * Loaded only for this command, with the runtime's own server; an agent never loads it.
 * @returns the exit status, once a signal stopped the relay.
 * @throws {AgentError} "usage" for what stops it from starting (a flag, a variable, the port,
 *   the certificate, the data directory), with the relay's hint.
 */
export async function relay(runtime: Runtime, argv: string[]): Promise<number> {
  if (!runtime.relayServer) {
    throw new AgentError("runtime", "this build of the agent has no relay", "run agent relay under Node, Bun or Deno");
  }
  const [{ relayCommand, RelayStartError }, serve] = await Promise.all([import("@burrow/edge/selfhost"), runtime.relayServer()]);
  try {
    return await relayCommand(argv, {
      env: (name) => runtime.env(name),
      onStop: (handler) => runtime.onStop(handler),
      print: (line) => console.log(line),
      serve,
    });
  } catch (error) {
    if (error instanceof RelayStartError) throw new AgentError("usage", error.message, error.hint);
    throw error;
  }
}
