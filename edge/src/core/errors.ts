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
  | "body-too-slow"
  | "too-many-streams"
  | "too-many-from-address"
  | "agent-offline"
  | "agent-timeout"
  | "agent-disconnected"
  | "origin-unreachable"
  | "origin-error"
  | "stream-reset"
  | "uri-too-long"
  | "request-header-too-large"
  | "rate-limited"
  | "relay-restarting"
  | "tcp-tunnel"
  | "relay-error";

export const ERROR_HEADER = "X-Burrow-Error";

/**
 * On every page the relay writes itself. nosniff: a browser never runs a relay page that
 * quotes a request as HTML or script, whatever it contains.
 */
export const RELAY_PAGE_HEADERS = { "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" } as const;

/** An error that becomes a plain-text page for the visitor (or the agent, for connect errors). */
export class EdgeError extends Error {
  override readonly name = "EdgeError";

  constructor(
    readonly status: number,
    readonly code: EdgeErrorCode,
    message: string,
    /** Extra response fields, e.g. Retry-After for 429 rate-limited. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toResponse(): Response {
    return new Response(`${this.status} ${this.code}\n\n${this.message}\n`, {
      status: this.status,
      headers: { ...RELAY_PAGE_HEADERS, "Content-Type": "text/plain; charset=utf-8", [ERROR_HEADER]: this.code, ...this.headers },
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
