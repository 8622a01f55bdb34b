import { readdirSync, readFileSync } from "node:fs";

/** `pid` and all its descendants, from /proc. */
export function processTree(pid: number): number[] {
  const found = [pid];
  for (let i = 0; i < found.length; i++) {
    for (const task of safe(() => readdirSync(`/proc/${found[i]}/task`), [] as string[])) {
      const children = safe(() => readFileSync(`/proc/${found[i]}/task/${task}/children`, "utf8"), "");
      found.push(...children.split(" ").filter(Boolean).map(Number));
    }
  }
  return found;
}

/** The program name of a process (`/proc/<pid>/comm`). */
export function command(pid: number): string {
  return safe(() => readFileSync(`/proc/${pid}/comm`, "utf8").trim(), "");
}

/** Resident memory now (VmRSS) and at its peak (VmHWM), in bytes. */
export function memory(pid: number): { rss: number; peak: number } {
  const status = safe(() => readFileSync(`/proc/${pid}/status`, "utf8"), "");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), peak: kb("VmHWM") };
}

/**
 * Samples the summed RSS of `pids()` every 50 ms until stopped; returns the highest seen. A
 * `pids()` that throws (its processes were stopped meanwhile) is a sample skipped: thrown from
 * the timer, it would end the process before the error that stopped them was reported, and
 * leave the rest of its children running.
 */
export function sampleRss(pids: () => number[]): { stop(): number } {
  let highest = 0;
  const take = () => {
    highest = Math.max(
      highest,
      safe(pids, [] as number[]).reduce((sum, pid) => sum + memory(pid).rss, 0),
    );
  };
  take();
  const timer = setInterval(take, 50);
  return {
    stop() {
      clearInterval(timer);
      take();
      return highest;
    },
  };
}

function safe<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** CPU time (user + system, ms) a process has used so far, from /proc (10 ms resolution). */
export function cpuTime(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}
