/**
 * What differs between Node, Bun and Deno, passed in by the small entry in `agent/bin/` for
 * each runtime. Everything else in the agent is shared and speaks web standards.
 */
export interface Runtime {
  /** "node 20.20.2", "bun 1.4.5", "deno 2.9.6": for --version and the hello. */
  readonly description: string;
  /** Reads an environment variable (Deno asks for permission). */
  env(name: string): string | undefined;
  /** Calls `handler` on every SIGINT, SIGTERM and SIGHUP (a closed terminal, or `kill -HUP`). */
  onStop(handler: () => void): void;
  /** Ends the process. Only the CLI calls this, never library code. */
  exit(code: number): never;
  /** Stdout, for the live console; absent where the runtime cannot tell. */
  readonly terminal?: Terminal;
  /** Turns a runtime-specific failure (a missing Deno permission) into a message with a hint. */
  explain?(error: unknown): { message: string; hint: string } | undefined;
  /**
   * Why listening on `host`:`port` (the inspector) is not permitted, or undefined: Deno's
   * node:http throws a missing --allow-net from a later tick, where no caller can catch it.
   */
  listenDenied?(host: string, port: number): string | undefined;
}

/** Stdout as a terminal: what the live console needs to draw itself in place. */
export interface Terminal {
  /** Stdout is a terminal (not a pipe, a file, CI's log or systemd's journal). */
  readonly isTTY: boolean;
  /** NO_COLOR is set and not empty (no-color.org). */
  readonly noColor: boolean;
  /** The current size; 0 when unknown. */
  size(): { columns: number; rows: number };
  /** Calls `handler` after the terminal is resized (SIGWINCH). */
  onResize(handler: () => void): void;
  /** Writes without a newline: escape codes and text, in one piece. */
  write(text: string): void;
}
