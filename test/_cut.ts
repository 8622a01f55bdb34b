import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Whether this process may abort TCP connections with `ss -K` (root, and ss present). */
export async function canCut(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  try {
    await run("ss", ["-V"]);
    return true;
  } catch {
    return false;
  }
}

/** The local addresses of the established TCP connections process `pid` holds to `port` on loopback. */
export async function connectionsTo(pid: number, port: number): Promise<string[]> {
  const { stdout } = await run("ss", ["-tnpH", "state", "established", "dst", `127.0.0.1:${port}`]);
  return stdout
    .split("\n")
    .filter((line) => line.includes(`pid=${pid},`))
    .flatMap((line) => line.trim().split(/\s+/)[2] ?? []);
}

/** Aborts the connection from `local` to `port` on loopback (see cutConnections). */
export async function cut(local: string, port: number): Promise<void> {
  await run("ss", ["-K", "-tnH", "state", "established", "src", local, "dst", `127.0.0.1:${port}`]);
}

/**
 * Aborts the TCP connections process `pid` holds to `port` on loopback, as a proxy or NAT
 * that cuts them would (`ss -K`: the kernel resets both ends). Returns how many it cut.
 */
export async function cutConnections(pid: number, port: number): Promise<number> {
  const locals = await connectionsTo(pid, port);
  for (const local of locals) await cut(local, port);
  return locals.length;
}
