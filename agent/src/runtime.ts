import type { ServeRelay } from "@burrow/edge/selfhost/server";

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
  /**
   * The runtime's foreign function interface, loaded on first use (Negotiate proxy auth calls
   * the system's GSSAPI through it); absent where there is none (Node 20). Rejects with a
   * message and a hint when the runtime withholds it (Deno without --allow-ffi).
   */
  ffi?(): Promise<Ffi>;
  /**
   * The runtime's server for `agent relay` (edge/src/selfhost/node.ts, bun.ts, deno.ts), loaded
   * by that command only: an agent never loads the relay.
   */
  relayServer?(): Promise<ServeRelay>;
}

/** An argument to a C function: an integer, a pointer's address, or the address of this buffer. */
export type NativeArg = number | bigint | ArrayBufferView;

/** A C function's parameters and result: 32-bit integers and pointers (64-bit platforms). */
export interface NativeSignature {
  args: readonly ("u32" | "i32" | "pointer")[];
  returns: "u32" | "i32";
}

/** A C library opened with dlopen. */
export interface NativeLibrary {
  /** Calls `symbol`, one of those it was opened with. */
  call(symbol: string, args: readonly NativeArg[]): number;
  close(): void;
}

/** What the agent needs of bun:ffi or Deno.dlopen: open a library, and read native memory. */
export interface Ffi {
  /** "linux", "darwin", "windows": which system library to open, and its struct layouts. */
  readonly os: string;
  /** "x64", "arm64": with `os`, the C struct layouts (Apple packs GSSAPI's on x64 only). */
  readonly arch: string;
  /**
   * Opens the first of `paths` that loads (a file path or a name for the system's loader).
   * @throws {Error} naming every path tried, when none loads.
   */
  open(paths: readonly string[], symbols: Readonly<Record<string, NativeSignature>>): NativeLibrary;
  /** The address of `view`'s first byte, valid while `view` is alive and not moved. */
  address(view: ArrayBufferView): bigint;
  /** A copy of `length` bytes at `address`. */
  read(address: bigint, length: number): Uint8Array;
  /** The NUL-terminated UTF-8 string at `address`. */
  readCString(address: bigint): string;
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
