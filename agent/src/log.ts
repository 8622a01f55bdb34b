/** The agent's output: one line per event, errors with a hint, details only with --debug. */
export class Log {
  constructor(private readonly debugging = false) {}

  info(line: string): void {
    console.log(line);
  }

  warn(line: string): void {
    console.error(`warning: ${line}`);
  }

  error(message: string, hint = ""): void {
    console.error(`error: ${message}${hint ? `\n  hint: ${hint}` : ""}`);
  }

  debug(line: string, error?: unknown): void {
    if (!this.debugging) return;
    console.error(`debug: ${line}`);
    if (error) console.error(error);
  }

  /** One line per finished request: `GET /path 200 12ms`. */
  request(method: string, path: string, outcome: number | string, startedAt: number): void {
    const shown = path.length > 100 ? `${path.slice(0, 97)}...` : path;
    console.log(`${method} ${shown} ${outcome} ${Math.round(performance.now() - startedAt)}ms`);
  }
}
