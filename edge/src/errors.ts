/**
 * Visitor-facing error codes: stable, shown in the page and in the `X-Burrow-Error` header so
 * that scripts and tests can tell a relay error from the origin's own 502.
 */
export type EdgeErrorCode =
  | "not-found"
  | "bad-request"
  | "unauthorized"
  | "forbidden"
  | "body-too-large"
  | "too-many-streams"
  | "agent-offline"
  | "agent-timeout"
  | "agent-disconnected"
  | "origin-unreachable"
  | "origin-error"
  | "stream-reset"
  | "relay-error";

export const ERROR_HEADER = "X-Burrow-Error";

/** An error that becomes a plain-text page for the visitor (or the agent, for connect errors). */
export class EdgeError extends Error {
  override readonly name = "EdgeError";
  /** Extra response headers: WWW-Authenticate, Retry-After. */
  headers: Record<string, string> = {};

  constructor(
    readonly status: number,
    readonly code: EdgeErrorCode,
    message: string,
  ) {
    super(message);
  }

  toResponse(): Response {
    return new Response(`${this.status} ${this.code}\n\n${this.message}\n`, {
      status: this.status,
      headers: {
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
        [ERROR_HEADER]: this.code,
        ...this.headers,
      },
    });
  }
}

/**
 * True for the errors that a closing socket or a departed visitor raises in normal operation
 * (a send racing a close, a write to a stream the visitor cancelled). These are logged at
 * most at debug level; anything else is a bug worth a line in the log.
 */
export function isTeardownNoise(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return /after close|WebSocket (?:is )?(?:already )?closed|closed WebSocket|stream (?:was |has been |is )?(?:closed|cancel|errored)|Network connection lost|disconnected/i.test(
    error.message,
  );
}
