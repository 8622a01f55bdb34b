/** How often streams waiting for their head are looked at. */
const SWEEP_MS = 1000;
/** A stream waiting this long for its head starts watching for its visitor's departure. */
const WATCH_AFTER_MS = 500;

interface Wait {
  since: number;
  deadline: number;
  timeoutMs: number;
  tunnel: string;
  signal: AbortSignal | undefined;
  watched: boolean;
}

/**
 * The streams waiting for their response head, with one timer for them all, every SWEEP_MS
 * while any waits (so an idle Durable Object can still hibernate): a timer per request, and an
 * abort listener on each, cost the relay about 60 µs of its CPU per small request at c=1
 * (bench/profile.ts), and most requests have their head within a millisecond. A request still
 * waiting after WATCH_AFTER_MS gets its listener. Streams wait in the order of their
 * deadlines, since `timeoutMs` is the relay's one setting.
 */
export class HeadDeadlines {
  private readonly waiting = new Map<number, Wait>();
  private sweeper: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param waits whether stream `id` still waits for its head (else it is forgotten here).
   * @param late called when stream `id` had no head within `timeoutMs`.
   * @param left called when the visitor of a waiting stream went away.
   */
  constructor(
    private readonly waits: (id: number) => boolean,
    private readonly late: (id: number, tunnel: string, timeoutMs: number) => void,
    private readonly left: (id: number) => void,
  ) {}

  /** `signal`: the visitor's departure, where the host tells it (in one process the front's hop carries none). */
  add(id: number, timeoutMs: number, tunnel: string, signal: AbortSignal | undefined): void {
    const now = Date.now();
    this.waiting.set(id, { since: now, deadline: now + timeoutMs, timeoutMs, tunnel, signal, watched: false });
    this.sweeper ??= setTimeout(() => this.sweep(), SWEEP_MS);
  }

  delete(id: number): void {
    this.waiting.delete(id);
  }

  /** Times out the streams whose head is late, and watches for visitors who left the others. */
  private sweep(): void {
    this.sweeper = undefined;
    const now = Date.now();
    for (const [id, wait] of this.waiting) {
      if (!this.waits(id)) {
        this.waiting.delete(id);
        continue;
      }
      if (wait.deadline <= now) {
        this.waiting.delete(id);
        this.late(id, wait.tunnel, wait.timeoutMs);
        continue;
      }
      if (now - wait.since < WATCH_AFTER_MS) break; // the ones after it are younger still
      if (wait.watched || !wait.signal) continue;
      wait.watched = true;
      if (wait.signal.aborted) this.left(id);
      else wait.signal.addEventListener("abort", () => this.left(id));
    }
    if (this.waiting.size > 0) this.sweeper = setTimeout(() => this.sweep(), SWEEP_MS);
  }
}
