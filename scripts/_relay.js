// The local relay of `npm run relay` and `npm run dev`: wrangler dev (and the workerd it starts)
// in a process group of its own, with its noise filtered out, and stopped group and all.
import { spawn } from "node:child_process";
import net from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

// The closed-network warning about Request.cf, and its stack, say nothing useful here; nor do
// workerd's stacks (bare addresses), nor its and wrangler's words on a port in use, should one be
// taken after portInUse looked: wrangler's advice to pass `--port` would reach the agent here.
const NOISE =
  /\[wrangler:info\] [A-Z]+ \/|Unable to fetch the `Request.cf` object|getaddrinfo ENOTFOUND workers.cloudflare.com|^\s+at |update available|^\s*stack: (\S*workerd@\S+\s*)+$|Address already in use/;

// Printed once, when the relay is ready. Under wrangler dev the relay takes a visitor's own
// CF-Connecting-IP for its address (wrangler sets the field only when the client sent none; see
// clientAddress in edge/src/core/headers.ts), so --allow-ip and CONNECTS_PER_MINUTE can be fooled.
const DEV_ONLY =
  "relay | note: this relay is for development: it believes the address a visitor claims (CF-Connecting-IP), so --allow-ip and\n" +
  "relay |   CONNECTS_PER_MINUTE can be fooled. Do not let an untrusted network reach it; deploy with `npm run deploy`.\n";

/**
 * Starts `wrangler dev` on `port`, its lines prefixed with "relay | " (but NOISE), and calls
 * `onReady` once, when it serves. `extra` goes to wrangler (`--var KEY:VALUE`, `--ip`).
 * Resolves `exited` with wrangler's status, or its signal's name.
 */
export function startRelay({ port, onReady = () => {}, extra = [] }) {
  const child = spawn(
    process.execPath,
    [
      join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
      "dev",
      "--port",
      String(port),
      "--show-interactive-dev-session=false",
      ...extra,
    ],
    {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false" },
      stdio: ["ignore", "pipe", "pipe"],
      // A group of its own: workerd is wrangler's child, and a `kill -9` of wrangler leaves
      // it running, holding the port and answering nothing. stop() signals the whole group.
      detached: true,
    },
  );
  let ready = false;
  const lines = (stream, write) => {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      const parts = (partial + chunk).split("\n");
      partial = parts.pop();
      for (const line of parts) {
        if (line.trim() && !NOISE.test(line)) write(`relay | ${line}\n`);
        if (!ready && /Ready on http/.test(line)) {
          ready = true;
          process.stderr.write(DEV_ONLY);
          onReady();
        }
      }
    });
  };
  lines(child.stdout, (line) => process.stdout.write(line));
  lines(child.stderr, (line) => process.stderr.write(line));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve(signal ?? code)));
  let stopping;

  return {
    exited,
    get ready() {
      return ready;
    },
    /** Signals wrangler's whole group; SIGKILL after 5 s if it has not exited by then. */
    stop(signal = "SIGTERM") {
      signalGroup(child.pid, signal);
      stopping ??= Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]).then(() =>
        signalGroup(child.pid, "SIGKILL"),
      );
      return stopping;
    },
  };
}

function signalGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

/**
 * True when something already listens on `port` of localhost (IPv4 or IPv6: wrangler's
 * "localhost" may be either, and so may a browser's), so that the scripts can say so before
 * wrangler starts: workerd would print a fatal stack trace and wrangler advice to pass `--port`,
 * which in `npm run dev` goes to the agent.
 */
export async function portInUse(port) {
  const tries = ["127.0.0.1", "::1"].map(
    (host) =>
      new Promise((resolve) => {
        const server = net.createServer();
        // EADDRNOTAVAIL and the like: no such loopback here (an IPv4-only host), so not in use.
        server.once("error", (error) => resolve(error.code === "EADDRINUSE"));
        server.listen({ port: Number(port), host, exclusive: true }, () => server.close(() => resolve(false)));
      }),
  );
  return (await Promise.all(tries)).some(Boolean);
}

/**
 * Stops the relay, group and all, when this process is told to stop or exits, however the rest
 * of it ends. (A `kill -9` of this process cannot be caught: stop wrangler's group by hand then,
 * `kill -- -<wrangler's pid>`.)
 */
export function stopOnExit(relay) {
  process.on("exit", () => relay.stop("SIGKILL"));
}
