import { readFileSync } from "node:fs";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { processTree } from "../_memory.ts";
import { Origin } from "../_origin.ts";
import { Child, freePort } from "../_process.ts";
import { ROOT } from "../_relay.ts";
import { visit } from "../_visit.ts";

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True when something accepts connections on `port` (IPv4 or IPv6 loopback: wrangler's "localhost" may be either). */
async function listening(port: number): Promise<boolean> {
  const tries = ["127.0.0.1", "::1"].map(
    (host) =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect(port, host, () => {
          socket.destroy();
          resolve(true);
        });
        socket.on("error", () => resolve(false));
      }),
  );
  return (await Promise.all(tries)).some(Boolean);
}

async function eventually(check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return check();
}

describe("the local relay scripts", () => {
  const children: Child[] = [];
  const origins: Origin[] = [];
  afterEach(async () => {
    for (const child of children.splice(0)) await child.stop("SIGKILL");
    for (const origin of origins.splice(0)) await origin.close();
  });

  function start(label: string, command: string, args: string[], port: number): Child {
    const env = { ...process.env, BURROW_RELAY_PORT: String(port), WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", CI: "1" };
    const child = new Child(label, command, args, { cwd: ROOT, env });
    children.push(child);
    return child;
  }

  it("npm run relay serves the relay alone on BURROW_RELAY_PORT, quietly, says once it is for development, and stops with its group", async () => {
    const port = await freePort();
    const relay = start("npm-run-relay", "npm", ["run", "--silent", "relay"], port);
    await relay.waitFor(/Ready on http/, { timeoutMs: 60_000 });
    const info = await visit(`http://localhost:${port}/_burrow/info`);
    expect(JSON.parse(info.body.toString())).toMatchObject({ burrow: true });
    await visit(`http://localhost:${port}/`);
    // Under wrangler dev a visitor's own CF-Connecting-IP is believed (see clientAddress).
    await relay.waitFor(/Do not let an untrusted network reach it/, { timeoutMs: 10_000 });
    expect(relay.output.match(/this relay is for development: it believes the address a visitor claims/g)).toHaveLength(1);
    const workerd = processTree(relay.pid).filter((pid) => /workerd/.test(cmdline(pid)));
    expect(workerd.length).toBeGreaterThan(0);
    expect(relay.output).not.toMatch(/\[wrangler:info\] GET/);
    // Only the script, as a kill would: npm passes a signal of its own on and dies of it.
    const script = processTree(relay.pid).find((pid) => /^\S*node scripts\/relay\.js/.test(cmdline(pid)))!;
    process.kill(script, "SIGTERM");
    expect(await relay.exited).toBe(0);
    expect(await eventually(async () => !(await listening(port)) && !workerd.some(alive), 5000)).toBe(true);
  });

  it.each([
    ["npm run dev", ["scripts/dev.js", "--port", "8000"]],
    ["npm run relay", ["scripts/relay.js"]],
  ])("%s with its relay port in use says so with Burrow's hint only and exits 1", async (_, args) => {
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      const script = start("busy-port", process.execPath, args, port);
      expect(await script.exited).toBe(1);
      expect(script.output).toContain(`error: port ${port} is in use, so the relay cannot listen on http://localhost:${port}`);
      expect(script.output).toMatch(/\n\s+hint: stop what uses it .* set BURROW_RELAY_PORT to another port/);
      // Not workerd's fatal stack trace, nor wrangler's advice to pass --port (the agent's flag here).
      expect(script.output).not.toMatch(/kj::Exception|stack:|Address already in use|with --port/);
      expect(script.lines.filter((line) => line.trim() !== "")).toHaveLength(2);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it("npm run dev says the relay stopped, stops the agent and exits 1 after a kill -9 of wrangler, leaving the port free", async () => {
    const [port, origin] = await Promise.all([freePort(), Origin.start()]);
    origins.push(origin);
    const dev = start("dev", process.execPath, ["scripts/dev.js", "--port", String(origin.port)], port);
    await dev.waitFor(/tunnel \S+ is up/, { timeoutMs: 60_000 });
    const tree = processTree(dev.pid);
    const wrangler = tree.find((pid) => /wrangler\.js dev/.test(cmdline(pid)))!;
    const workerd = tree.filter((pid) => /workerd/.test(cmdline(pid)));
    const agent = tree.find((pid) => /agent\/bin\/agent\.js/.test(cmdline(pid)))!;
    expect(wrangler && agent && workerd.length).toBeTruthy();
    const killed = Date.now();
    process.kill(wrangler, "SIGKILL");
    expect(await Promise.race([dev.exited, new Promise((resolve) => setTimeout(() => resolve("still running"), 10_000))])).toBe(
      1,
    );
    expect(dev.output).toMatch(/error: the relay stopped \(wrangler dev exited with SIGKILL\); stopping the agent\n\s+hint: /);
    expect(await eventually(async () => !(await listening(port)) && !workerd.some(alive) && !alive(agent), 5000)).toBe(true);
    expect(Date.now() - killed).toBeLessThan(8000);
  });
});
