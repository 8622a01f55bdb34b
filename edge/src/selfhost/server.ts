/**
 * What one runtime's server adapter (node.ts, bun.ts, deno.ts) does for the self-hosted relay,
 * and what the relay gives it. The relay answers every request with a web `Response`; a
 * visitor's or an agent's WebSocket comes back as a marker response (UPGRADE_HEADER, see
 * _links.ts), which the adapter turns into its runtime's own upgrade: no runtime lets a
 * `Response` carry status 101 the way Workers' `webSocket` does.
 */

/** On a response: "upgrade this request; the link waiting for its socket has this id". */
export const UPGRADE_HEADER = "x-burrow-selfhost-upgrade";

/** A server end of a WebSocket, as each runtime has one. */
export interface ServerSocket {
  send(message: string | Uint8Array): void;
  /** Starts the closing handshake (RFC 6455 section 7.1.2). */
  close(code: number, reason: string): void;
  /** Drops the connection without a handshake; where the runtime has no way to, forgets it. */
  terminate(): void;
  /** Bytes queued and not yet written to the network. */
  bufferedAmount(): number;
}

/** What the adapter reports of a socket it accepted for a link. */
export interface SocketEvents {
  message(message: string | ArrayBuffer): void;
  /** The socket closed, cleanly or not (1006 when no close frame came). Called once. */
  closed(code: number, reason: string): void;
  errored(error: unknown): void;
}

/** A WebSocket upgrade the relay asked for, taken from its marker response. */
export interface Upgrade {
  /** The subprotocol to answer with (the origin's choice, for a visitor), or undefined. */
  protocol: string | undefined;
  /** Fields for the 101 besides the handshake's own (Set-Cookie, say). */
  headers: [string, string][];
  /** The socket is open: from now on its messages go to the link. */
  attach(socket: ServerSocket): SocketEvents;
  /** The upgrade failed (the client left first): the link is closed with 1006. */
  abandon(): void;
}

/** What the relay is to an adapter. */
export interface RelayHandler {
  /**
   * Answers one request. `peer` is the TCP peer's address as the runtime reports it (an IPv4
   * address mapped into IPv6 stays so; the relay unmaps it).
   */
  fetch(request: Request, peer: string | undefined): Promise<Response>;
  /** The upgrade a marker response names, once; undefined for any other response. */
  takeUpgrade(response: Response): Upgrade | undefined;
}

export interface ServeOptions {
  host: string;
  port: number;
  /** PEM text, already checked (see _tls.ts). */
  tls?: { cert: string; key: string };
  /** The largest request head the relay checks itself (MAX_REQUEST_HEAD_BYTES): the runtime must allow more. */
  maxHeadBytes: number;
  handler: RelayHandler;
}

export interface RunningServer {
  /** The port it listens on (the one asked for, or the one picked for port 0). */
  readonly port: number;
  /** Stops accepting connections, and ends those still open after `graceMs`. */
  close(graceMs: number): Promise<void>;
}

/** Why listening failed, in words the relay command turns into a message with a hint. */
export class ListenError extends Error {
  override readonly name = "ListenError";

  constructor(
    readonly reason: "in-use" | "denied" | "unknown",
    message: string,
  ) {
    super(message);
  }
}

/** Each runtime's adapter: starts listening, resolves once it does. @throws {ListenError} */
export type ServeRelay = (options: ServeOptions) => Promise<RunningServer>;

/** WebSocket messages the relay takes: as Workers' (32 MiB), far above any frame the agent sends. */
export const MAX_SOCKET_MESSAGE = 32 * 1024 * 1024;
