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

/**
 * Aborts the TCP connections process `pid` holds to `port` on loopback, as a proxy or NAT
 * that cuts them would (`ss -K`: the kernel resets both ends). Returns how many it cut.
 */
export async function cutConnections(pid: number, port: number): Promise<number> {
  const { stdout } = await run("ss", ["-tnpH", "state", "established", "dst", `127.0.0.1:${port}`]);
  let cut = 0;
  for (const line of stdout.split("\n")) {
    if (!line.includes(`pid=${pid},`)) continue;
    const [, , local] = line.trim().split(/\s+/);
    if (!local) continue;
    await run("ss", ["-K", "-tnH", "state", "established", "src", local, "dst", `127.0.0.1:${port}`]);
    cut++;
  }
  return cut;
}
