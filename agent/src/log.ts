import { TtySink } from "./log-tty.ts";
import type { Terminal } from "./runtime.ts";

export type Level = "info" | "warn" | "error" | "debug";

/** One thing that happened, as every sink receives it. */
export interface LogRecord {
  level: Level;
  /** Stable, for --log json: "up", "request", "connection-lost", "warning", ... */
  event: string;
  /** The line as plain mode prints it (without the "warning: " or "error: " prefix). */
  text: string;
  hint?: string;
  fields?: Record<string, unknown>;
}

/** One finished request, for the counters and the tty's coloured line. */
export interface RequestRecord {
  method: string;
  path: string;
  outcome: number | string;
  ms: number;
  bytes: number;
}

/** What the tty's status block shows; every sink may read it. */
export interface Status {
  relay: string;
  /** "connecting", "up", "reconnecting in 1.2s", "stopped". */
  state: string;
  tunnels: { name: string; url: string; origin: string }[];
  transport: string;
  rttMs?: number;
  requests: number;
  bytesIn: number;
  bytesOut: number;
  /** The request inspector's URL, or "off". */
  inspector: string;
}

/** Where records go: plain lines, JSON lines, or the terminal's live console. */
export interface Sink {
  write(record: LogRecord, request?: RequestRecord): void;
  /** The status changed: redraw it if this sink shows it. */
  update?(status: Status): void;
  close?(): void;
}

export type LogMode = "auto" | "plain" | "json";

export interface LogOptions {
  mode?: LogMode;
  debug?: boolean;
  /** Only warnings and errors. */
  quiet?: boolean;
  /** Stdout as a terminal, for --log auto; absent: not a terminal. */
  terminal?: Terminal;
  /** Every line on stderr: stdout carries something else (`agent connect --stdio`). */
  stderrOnly?: boolean;
}

/** How long request lines may wait to be written together (see Lines). */
const LINES_DELAY_MS = 50;
/** Written at once beyond this many characters waiting. */
const LINES_MAX_PENDING = 64 * 1024;

/**
 * Request lines are written together, LINES_DELAY_MS after the first: under load every request
 * is a line, and a console.log each cost the Node agent about 80 µs of its CPU per small request,
 * most of it in waking whatever reads the pipe (bench/profile.ts). Any other line flushes them
 * first and goes at once, so lines keep their order on both streams.
 */
class Lines {
  constructor(private readonly stderrOnly = false) {}

  private pending: string[] = [];
  private size = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** A line on stdout: a request's (`batched`), or any other. */
  out(line: string, batched: boolean): void {
    if (!batched) {
      this.flush();
      if (this.stderrOnly) console.error(line);
      else console.log(line);
      return;
    }
    this.pending.push(line);
    this.size += line.length;
    if (this.size >= LINES_MAX_PENDING) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), LINES_DELAY_MS);
  }

  err(line: string): void {
    this.flush();
    console.error(line);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const lines = this.pending.join("\n");
    this.pending = [];
    this.size = 0;
    if (this.stderrOnly) console.error(lines);
    else console.log(lines);
  }
}

/** Today's lines: results on stdout, warnings, errors and details on stderr. */
export class PlainSink implements Sink {
  private readonly lines: Lines;

  constructor(stderrOnly = false) {
    this.lines = new Lines(stderrOnly);
  }

  write(record: LogRecord): void {
    switch (record.level) {
      case "info":
        this.lines.out(record.text, record.event === "request");
        return;
      case "warn":
        this.lines.err(`warning: ${record.text}`);
        return;
      case "error":
        this.lines.err(`error: ${record.text}${record.hint ? `\n  hint: ${record.hint}` : ""}`);
        return;
      case "debug":
        this.lines.err(`debug: ${record.text}`);
    }
  }

  close(): void {
    this.lines.flush();
  }
}

/** One JSON object per line on stdout, for log collectors: `{"time", "level", "event", "message", ...}`. */
export class JsonSink implements Sink {
  private readonly lines = new Lines();

  write(record: LogRecord): void {
    const { level, event, text, hint, fields } = record;
    const line = JSON.stringify({
      time: new Date().toISOString(),
      level,
      event,
      message: text,
      ...(hint ? { hint } : {}),
      ...fields,
    });
    this.lines.out(line, event === "request");
  }

  close(): void {
    this.lines.flush();
  }
}

/**
 * The agent's output: one event per line, errors with a hint, details only with --debug. The
 * sink decides the form; the status (URL, transport, round trip, counters) is kept here.
 */
export class Log {
  readonly status: Status = {
    relay: "",
    state: "connecting",
    tunnels: [],
    transport: "",
    requests: 0,
    bytesIn: 0,
    bytesOut: 0,
    inspector: "off",
  };
  private readonly sink: Sink;
  private readonly debugging: boolean;
  private readonly quiet: boolean;

  constructor(options: LogOptions | boolean = {}) {
    const {
      mode = "auto",
      debug = false,
      quiet = false,
      terminal,
      stderrOnly = false,
    } = typeof options === "boolean" ? { debug: options } : options;
    this.debugging = debug;
    this.quiet = quiet;
    if (stderrOnly) this.sink = new PlainSink(true);
    else if (mode === "json") this.sink = new JsonSink();
    else if (mode === "auto" && terminal?.isTTY) this.sink = new TtySink(terminal, this.status);
    else this.sink = new PlainSink();
  }

  /** Whether the live console is on (stdout is a terminal and --log is auto). */
  get live(): boolean {
    return this.sink instanceof TtySink;
  }

  info(line: string, event = "info", fields?: Record<string, unknown>): void {
    if (!this.quiet) this.sink.write({ level: "info", event, text: line, fields });
  }

  /** An info line that --quiet keeps: the tunnel's public URL is the one line a user needs. */
  result(line: string, event = "info", fields?: Record<string, unknown>): void {
    this.sink.write({ level: "info", event, text: line, fields });
  }

  warn(line: string, event = "warning", fields?: Record<string, unknown>): void {
    this.sink.write({ level: "warn", event, text: line, fields });
  }

  error(message: string, hint = "", event = "error", fields?: Record<string, unknown>): void {
    this.sink.write({ level: "error", event, text: message, hint, fields });
  }

  debug(line: string, error?: unknown): void {
    if (!this.debugging) return;
    const detail = error === undefined ? "" : `\n${(error as Error)?.stack ?? String(error)}`;
    this.sink.write({ level: "debug", event: "debug", text: `${line}${detail}` });
  }

  /** One line per finished request: `GET /path 200 12ms`; `bytes`: the response body's size. */
  request(method: string, path: string, outcome: number | string, startedAt: number, bytes = 0): void {
    const ms = Math.round(performance.now() - startedAt);
    this.status.requests++;
    this.update({});
    if (this.quiet) return;
    const shown = path.length > 100 ? `${path.slice(0, 97)}...` : path;
    const connection = this.connection === undefined ? {} : { connection: this.connection };
    this.sink.write(
      {
        level: "info",
        event: "request",
        text: `${method} ${shown} ${outcome} ${ms}ms`,
        fields: { method, path, status: outcome, durationMs: ms, bytes, ...connection },
      },
      { method, path: shown, outcome, ms, bytes },
    );
  }

  /** Body bytes through the tunnel: `received` from visitors, `sent` to them. */
  traffic(received: number, sent: number): void {
    this.status.bytesIn += received;
    this.status.bytesOut += sent;
    this.update({});
  }

  /** The request inspector's URL, shown in the status block ("off" until set). */
  setInspector(url: string | undefined): void {
    this.update({ inspector: url ?? "off" });
  }

  /**
   * This log, with the lines of one tunnel's connection (`transport: ...`, `connection lost`,
   * warnings) prefixed by its name: for an agent that runs several tunnels.
   */
  forTunnel(name: string): Log {
    const named = (line: string) => (line.startsWith(`tunnel ${name} `) ? line : `tunnel ${name}: ${line}`);
    const view = Object.create(this) as Log;
    view.info = (line, event, fields) => this.info(named(line), event, fields);
    view.result = (line, event, fields) => this.result(named(line), event, fields);
    view.warn = (line, event, fields) => this.warn(named(line), event, fields);
    view.error = (message, hint, event, fields) => this.error(named(message), hint, event, fields);
    return view;
  }

  /** Which of its tunnel's connections this log's requests came over (see forConnection). */
  private connection: number | undefined;

  /**
   * This log, for connection `index` (0-based) of a tunnel's several (`--connections`): its
   * request events (`--log json`) say which connection carried them.
   */
  forConnection(index: number): Log {
    const view = Object.create(this) as Log;
    view.connection = index;
    return view;
  }

  /** A tunnel is up: its row in the status block, replacing the one of the same name. */
  tunnelUp(tunnel: Status["tunnels"][number]): void {
    const others = this.status.tunnels.filter((t) => t.name !== tunnel.name);
    this.update({ state: "up", tunnels: [...others, tunnel] });
  }

  update(change: Partial<Status>): void {
    Object.assign(this.status, change);
    this.sink.update?.(this.status);
  }

  /** Gives the terminal back (scroll region, cursor); the last lines stay on screen. */
  close(): void {
    this.sink.close?.();
  }
}
