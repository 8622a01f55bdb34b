import { AgentError } from "./errors.ts";

/**
 * The error about a setting, naming where its value came from when that was not a flag. The
 * checks speak of flags (`--port eight is not a port number`); a value from burrow.toml or
 * config.toml is named by its file, line and key, and one from the environment by its variable,
 * since that is where the user goes to fix it.
 */
export function located(error: unknown, from: Record<string, string> | undefined): unknown {
  if (!(error instanceof AgentError) || !from) return error;
  const match = /^--([a-z-]+) (?!and )/.exec(error.message);
  const where = match && from[match[1]!];
  if (!where) return error;
  return new AgentError(error.code, `${where}: ${error.message.slice(match[0].length)}`, error.hint);
}
