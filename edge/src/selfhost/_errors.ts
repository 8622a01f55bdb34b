/**
 * Why the self-hosted relay cannot start, for the person starting it: the CLI prints the message
 * and the hint (as the agent's errors) and exits with status 2.
 */
export class RelayStartError extends Error {
  override readonly name = "RelayStartError";

  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}
