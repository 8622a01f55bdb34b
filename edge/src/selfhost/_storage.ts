import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TunnelStorage } from "../core/host.ts";

/** One object's file: its values and its alarm. */
interface Stored {
  values: Record<string, unknown>;
  alarm?: number;
}

/**
 * The data directory (`--data DIR`): one JSON file per object that has something to keep, under
 * `tunnels/` (name ownership, visitor rules, live shards) and `gates/` (the tunnels a token
 * holds), and `ports.json` (the public TCP port each name holds, with --tcp-ports). Each write replaces the whole file atomically (a temporary file, then rename(2)), so a
 * `kill -9` leaves the old file or the new one, never half of one. Without fsync: a crash of the
 * process loses nothing the kernel has; a power cut may lose the last second.
 */
export class DataDir {
  constructor(readonly path: string) {}

  /**
   * Makes the directory and proves it writable.
   * @throws {Error} from the file system (EACCES, EROFS, ENOTDIR...): the caller explains it.
   */
  prepare(): void {
    for (const kind of ["tunnels", "gates"]) mkdirSync(join(this.path, kind), { recursive: true });
    // Synchronous, at start: an unwritable directory is refused before the relay listens.
    for (const kind of ["tunnels", "gates"]) {
      const probe = join(this.path, kind, ".write-test.tmp");
      writeFileSync(probe, "");
      rmSync(probe);
    }
  }

  file(kind: "tunnels" | "gates", key: string): string {
    // Object names and gate keys hold ':' and '#' (IPv6, "token:<hash>", shards): encoded, one file each.
    return join(this.path, kind, `${encodeURIComponent(key)}.json`);
  }

  /** The public TCP ports names hold (--tcp-ports): one file for the relay, as the ports are its. */
  get portsFile(): string {
    return join(this.path, "ports.json");
  }

  /** The alarms stored under `tunnels/`, to arm again after a restart. */
  alarms(): { object: string; at: number }[] {
    const found: { object: string; at: number }[] = [];
    for (const entry of readdirSync(join(this.path, "tunnels"))) {
      if (!entry.endsWith(".json")) continue;
      const stored = readStored(join(this.path, "tunnels", entry));
      if (stored?.alarm !== undefined) found.push({ object: decodeURIComponent(entry.slice(0, -5)), at: stored.alarm });
    }
    return found;
  }
}

/** The object's file as stored; undefined when there is none (or it is unreadable: logged). */
function readStored(file: string): Stored | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") console.error(`relay | cannot read ${file}`, error);
    return undefined;
  }
  try {
    const stored = JSON.parse(text) as Stored;
    return typeof stored === "object" && stored !== null && typeof stored.values === "object" ? stored : undefined;
  } catch {
    console.error(`relay | ${file} is not valid JSON: starting that object empty`);
    return undefined;
  }
}

/**
 * One object's storage: in memory, and in its file when the relay has a data directory. Values
 * are copied in and out (structuredClone), as Durable Object storage does.
 *
 * Every change is in the file before its promise settles, written synchronously: a Durable
 * Object delivers no other event while its storage works (its input gate), and the core counts
 * on it (a hello that writes the name's record must not meet a visitor or a close halfway).
 * An asynchronous write here would let sockets' events in between. The writes are few (an
 * agent's hello and drop, an alarm) and small: a fraction of a millisecond each.
 */
export class ObjectStorage implements TunnelStorage {
  private values: Map<string, unknown>;
  private alarmAt: number | undefined;

  constructor(
    private readonly file: string | undefined,
    /** Called when the alarm changes (undefined: none), to arm or clear the timer. */
    private readonly onAlarm: (at: number | undefined) => void,
  ) {
    const stored = file ? readStored(file) : undefined;
    this.values = new Map(Object.entries(stored?.values ?? {}));
    this.alarmAt = stored?.alarm;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const value = this.values.get(key);
    return value === undefined ? undefined : (structuredClone(value) as T);
  }

  async put(key: string, value: unknown): Promise<void> {
    this.values.set(key, structuredClone(value));
    this.persist();
  }

  async delete(key: string): Promise<void> {
    if (this.values.delete(key)) this.persist();
  }

  async deleteAll(): Promise<void> {
    this.values.clear();
    this.setAlarmAt(undefined);
    this.persist();
  }

  async setAlarm(at: number): Promise<void> {
    this.setAlarmAt(at);
    this.persist();
  }

  /** The alarm fired: it is cleared before the core's alarm() runs, as on Cloudflare. */
  async alarmFired(): Promise<void> {
    this.alarmAt = undefined;
    this.persist();
  }

  /** Every key and value, copied. */
  entries(): [string, unknown][] {
    return [...this.values].map(([key, value]) => [key, structuredClone(value)]);
  }

  get alarm(): number | undefined {
    return this.alarmAt;
  }

  /** Nothing stored and no alarm: a store the registry need not keep in memory. */
  get empty(): boolean {
    return this.values.size === 0 && this.alarmAt === undefined;
  }

  private setAlarmAt(at: number | undefined): void {
    this.alarmAt = at;
    this.onAlarm(at);
  }

  /** Replaces the object's file atomically (a temporary file, then rename(2)), or removes it when empty. */
  private persist(): void {
    const file = this.file;
    if (!file) return;
    try {
      if (this.empty) {
        rmSync(file, { force: true });
        return;
      }
      const stored: Stored = { values: Object.fromEntries(this.values) };
      if (this.alarmAt !== undefined) stored.alarm = this.alarmAt;
      const temporary = `${file}.tmp`;
      writeFileSync(temporary, JSON.stringify(stored));
      renameSync(temporary, file);
    } catch (error) {
      console.error(`relay | cannot write ${file}; the change is kept in memory only`, error);
    }
  }
}
