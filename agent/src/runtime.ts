/**
 * What differs between Node, Bun and Deno, passed in by the small entry in `agent/bin/` for
 * each runtime. Everything else in the agent is shared and speaks web standards.
 */
export interface Runtime {
  /** "node 20.20.2", "bun 1.4.5", "deno 2.9.6": for --version and the hello. */
  readonly description: string;
  /** Opens a WebSocket client (Node 20 has none built in). */
  openWebSocket(url: string): WebSocketLike;
  /** Reads an environment variable (Deno asks for permission). */
  env(name: string): string | undefined;
  /** Calls `handler` on every SIGINT and SIGTERM. */
  onStop(handler: () => void): void;
  /** Ends the process. Only the CLI calls this, never library code. */
  exit(code: number): never;
  /** Turns a runtime-specific failure (a missing Deno permission) into a message with a hint. */
  explain?(error: unknown): { message: string; hint: string } | undefined;
}

/** The part of the WHATWG WebSocket the agent uses; `ws` on Node matches it too. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array | string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: "error", listener: (event: { message?: string; error?: unknown }) => void): void;
}
