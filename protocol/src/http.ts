/**
 * Connection-specific header fields that a proxy never forwards (RFC 9110 section 7.6.1), in
 * lowercase. Relay and agent both drop them, plus any field a Connection header names.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
