/** What went wrong, for the person running the agent. Each code has its own exit status. */
export type AgentErrorCode = "usage" | "refused" | "runtime" | "network";

/** 5, "network": the way to the relay fails in a way retrying cannot fix (proxy credentials or policy, an untrusted certificate). */
const EXIT_STATUS: Record<AgentErrorCode, number> = { usage: 2, refused: 3, runtime: 4, network: 5 };

/**
 * An error the CLI prints as `error: <message>` and `  hint: <hint>`, then exits with the
 * status of its code. Library code throws these; only the CLI exits.
 */
export class AgentError extends Error {
  override readonly name = "AgentError";

  constructor(
    readonly code: AgentErrorCode,
    message: string,
    readonly hint = "",
  ) {
    super(message);
  }

  get exitStatus(): number {
    return EXIT_STATUS[this.code];
  }
}
