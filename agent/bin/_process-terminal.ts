// Stdout as a terminal through `process`, for Node and Bun. SIGWINCH rather than the stream's
// "resize" event, which Bun's process.stdout does not emit.
import process from "node:process";
import type { Terminal } from "../src/runtime.ts";

export const processTerminal: Terminal = {
  isTTY: process.stdout.isTTY === true,
  noColor: Boolean(process.env.NO_COLOR),
  size: () => ({ columns: process.stdout.columns ?? 0, rows: process.stdout.rows ?? 0 }),
  onResize(handler) {
    // Node updates columns and rows on its own SIGWINCH listener; ours runs after it.
    if (process.platform !== "win32") process.on("SIGWINCH", () => setTimeout(handler, 0));
  },
  write: (text) => {
    process.stdout.write(text);
  },
};
