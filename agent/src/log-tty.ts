import type { LogRecord, RequestRecord, Sink, Status } from "./log.ts";
import type { Terminal } from "./runtime.ts";

// The live console: the status block holds the top rows and the log scrolls beneath it inside
// a scroll region (DECSTBM, ESC [ top ; bottom r), so that a new line never repaints the block.
// The block is rewritten line by line over itself, each ending in "erase to end of line"
// (ESC [ K) rather than after a clear, inside a synchronized update (mode 2026; terminals
// that lack it ignore it): no flicker. A resize clears the screen and draws everything again
// from the kept lines, at the new width.

const CSI = "\x1b[";
/** Log lines kept for the redraw after a resize: more than a terminal has rows. */
const KEPT_LINES = 300;
/** Counters change with every chunk; the block is redrawn at most this often. */
const REDRAW_MS = 100;
const LABEL = 11;

type Segment = [text: string, style?: string];

/** A line as written, to write again after a resize. */
interface Kept {
  record: LogRecord;
  request?: RequestRecord;
  /** HH:MM:SS when it happened. */
  time: string;
}

const STYLE = { dim: "2", bold: "1", red: "31", green: "32", yellow: "33", cyan: "36" } as const;

export class TtySink implements Sink {
  private readonly kept: Kept[] = [];
  private readonly color: boolean;
  private height = 0;
  private rows = 24;
  private columns = 80;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(
    private readonly terminal: Terminal,
    private readonly status: Status,
  ) {
    this.color = !terminal.noColor;
    terminal.onResize(() => this.redrawAll());
    this.redrawAll();
  }

  write(record: LogRecord, request?: RequestRecord): void {
    const kept = { record, request, time: new Date().toTimeString().slice(0, 8) };
    this.kept.push(kept);
    if (this.kept.length > KEPT_LINES) this.kept.shift();
    if (this.closed) {
      this.terminal.write(`${this.format(kept)}\r\n`);
      return;
    }
    // At the region's bottom row a newline scrolls the region only; the block stays.
    this.terminal.write(`${CSI}${this.rows};1H\r\n${this.format(kept)}`);
  }

  update(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      if (this.blockLines().length !== this.height) this.redrawAll();
      else this.terminal.write(this.drawBlock());
    }, REDRAW_MS);
  }

  close(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.terminal.write(`${this.drawBlock()}${CSI}r${CSI}${this.rows};1H\r\n`);
    this.closed = true;
  }

  private measure(): void {
    const { columns, rows } = this.terminal.size();
    this.columns = columns > 0 ? columns : 80;
    this.rows = rows > 0 ? rows : 24;
  }

  private redrawAll(): void {
    if (this.closed) return;
    this.measure();
    const block = this.blockLines();
    // Too small a terminal for a block and a log: the log alone.
    this.height = this.rows - block.length >= 3 ? block.length : 0;
    let out = `${CSI}?2026h${CSI}r${CSI}2J`;
    if (this.height) out += `${CSI}${this.height + 1};${this.rows}r${this.drawBlock()}`;
    out += `${CSI}${this.rows};1H`;
    for (const kept of this.kept.slice(-(this.rows - this.height))) out += `\r\n${this.format(kept)}`;
    this.terminal.write(`${out}${CSI}?2026l`);
  }

  /** The block in place, the cursor back where the log writes (DECSC / DECRC). */
  private drawBlock(): string {
    if (!this.height) return "";
    const lines = this.blockLines();
    let out = `${CSI}?2026h\x1b7`;
    lines.forEach((line, i) => {
      out += `${CSI}${i + 1};1H${this.render(line)}${CSI}K`;
    });
    return `${out}\x1b8${CSI}?2026l`;
  }

  private blockLines(): Segment[][] {
    const s = this.status;
    const state: Segment = [s.state, s.state === "up" ? STYLE.green : s.state === "stopped" ? STYLE.dim : STYLE.yellow];
    const label = (text: string): Segment => [text.padEnd(LABEL), STYLE.dim];
    const tunnels: Segment[][] = s.tunnels.length
      ? s.tunnels.map((t) => [label("tunnel"), [t.url, STYLE.bold], [` -> ${t.origin}`]])
      : [[label("tunnel"), ["waiting for the relay", STYLE.dim]]];
    return [
      [["Burrow", STYLE.bold], ["  "], state, ["   Ctrl-C to stop", STYLE.dim]],
      [label("relay"), [s.relay]],
      ...tunnels,
      [
        label("transport"),
        [s.transport || "-"],
        ["   round trip ", STYLE.dim],
        [s.rttMs === undefined ? "-" : s.rttMs < 1 ? "<1ms" : `${s.rttMs}ms`],
      ],
      [
        label("requests"),
        [String(s.requests)],
        ["   in ", STYLE.dim],
        [formatBytes(s.bytesIn)],
        ["   out ", STYLE.dim],
        [formatBytes(s.bytesOut)],
      ],
      [label("inspector"), [s.inspector]],
      [["─".repeat(this.columns), STYLE.dim]],
    ];
  }

  private format({ record, request, time: at }: Kept): string {
    const time: Segment = [`${at}  `, STYLE.dim];
    if (request) {
      const status: Segment = [String(request.outcome), outcomeStyle(request.outcome)];
      const tail = `  ${request.ms}ms  ${formatBytes(request.bytes)}`;
      const room = this.columns - 10 - 8 - status[0].length - tail.length - 2;
      const path = request.path.length > room ? `${request.path.slice(0, Math.max(room - 3, 1))}...` : request.path;
      return this.render([time, [request.method.padEnd(7), STYLE.bold], [`${path}  `], status, [tail, STYLE.dim]], Infinity);
    }
    switch (record.level) {
      case "warn":
        return this.render([time, ["warning: ", STYLE.yellow], [record.text]], Infinity);
      case "error": {
        const hint = record.hint ? `\r\n${" ".repeat(10)}${this.render([["hint: ", STYLE.dim], [record.hint]], Infinity)}` : "";
        return `${this.render([time, ["error: ", STYLE.red], [record.text]], Infinity)}${hint}`;
      }
      case "debug":
        return this.render([time, [`debug: ${record.text}`.replaceAll("\n", "\r\n"), STYLE.dim]], Infinity);
      default:
        return this.render([time, [record.text]], Infinity);
    }
  }

  /** Segments as text, styled unless NO_COLOR, cut at `width` visible characters. */
  private render(segments: Segment[], width = this.columns): string {
    let out = "";
    let left = width;
    for (const [text, style] of segments) {
      if (left <= 0) break;
      const cut = text.length > left ? text.slice(0, left) : text;
      left -= cut.length;
      out += style && this.color ? `${CSI}${style}m${cut}${CSI}0m` : cut;
    }
    return out;
  }
}

function outcomeStyle(outcome: number | string): string {
  if (typeof outcome !== "number" || outcome >= 500 || outcome === 0) return STYLE.red;
  if (outcome >= 400) return STYLE.yellow;
  if (outcome >= 300) return STYLE.cyan;
  return STYLE.green;
}

/** 512 B, 1.2 KB, 3.4 MB. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
