// A terminal for interactive programs: a detached tmux server of the test's own running one
// command line in a pseudo-terminal of a known size, typed into with send-keys and read back
// with capture-pane (as test/e2e/console.test.ts drives the agent's live console).
import { execFileSync } from "node:child_process";

/** Whether tmux is installed; false after a warning (with BURROW_REQUIRE_CORP=1, CI, it throws). */
export function hasTmux(what: string): boolean {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    const message = `tmux is missing: ${what} skipped (apt-get install tmux)`;
    if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
    console.warn(`SKIPPED: ${message}`);
    return false;
  }
}

/** Quotes a word for sh. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

export class Terminal {
  private readonly socket = `burrow-terminal-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

  /** Runs `commandLine` (sh syntax) in a `columns`x`rows` terminal, in `cwd`. */
  constructor(commandLine: string, { cwd = process.cwd(), columns = 120, rows = 30 } = {}) {
    this.tmux("-f", "/dev/null", "new-session", "-d", "-x", String(columns), "-y", String(rows), "-c", cwd, commandLine);
  }

  tmux(...args: string[]): string {
    return execFileSync("tmux", ["-L", this.socket, ...args], { encoding: "utf8" });
  }

  /** The screen as text, one string per row. */
  screen(): string[] {
    return this.tmux("capture-pane", "-p").split("\n");
  }

  /** Types `text` as keys, then Enter. */
  type(text: string): void {
    this.tmux("send-keys", "-l", text);
    this.tmux("send-keys", "Enter");
  }

  async until(test: (rows: string[]) => boolean, timeoutMs = 20_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = this.screen();
      if (test(rows)) return rows;
      if (Date.now() > deadline) throw new Error(`the screen never matched:\n${rows.join("\n")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  close(): void {
    try {
      this.tmux("kill-server");
    } catch {
      // already gone
    }
  }
}
