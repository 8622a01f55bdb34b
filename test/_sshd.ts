// A real OpenSSH server on loopback (Debian's sshd) that a client key made here is the only way
// into, the ssh and scp clients to use it, and `ssh -L` forwards through it: a service for the
// TCP tunnel to carry and the reference tunnel it is measured against. Used through _services.ts.
import { execFileSync, spawn } from "node:child_process";
import { accessSync, constants, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { delimiter, join } from "node:path";
import { processTree } from "./_memory.ts";
import { Child, freePort, waitForListen } from "./_process.ts";

const DEBUG = process.env.TEST_DEBUG === "1";

/** Where `name` is: PATH first, then the sbin folders that a user's PATH often lacks (sshd). */
export function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const dir of dirs.filter(Boolean)) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface RunResult {
  /** The exit status; -1 if killed by a signal. */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `ssh` or `scp` (or another command) to completion, with `input` on its stdin (else
 * /dev/null, so that ssh never waits on the test's terminal), in the test's environment and
 * folder or `env` and `cwd` (which a ProxyCommand inherits).
 * @throws {Error} when it has not finished within `timeoutMs`; its group is killed first.
 */
export function sshRun(
  program: string,
  args: string[],
  {
    input,
    timeoutMs = 30_000,
    env,
    cwd,
  }: { input?: string | Uint8Array; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // Own process group: a ProxyCommand's process is killed with ssh on a timeout.
    const child = spawn(program, args, {
      detached: true,
      stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: env ?? process.env,
      cwd,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr!.on("data", (chunk: Buffer) => err.push(chunk));
    if (input !== undefined) child.stdin!.end(input);
    child.stdin?.on("error", () => {}); // EPIPE when the program exits without reading it all
    const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString("utf8");
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = { code: code ?? (signal ? -1 : 0), stdout: text(out), stderr: text(err) };
      if (DEBUG) console.log(`[${program}] exit ${result.code}\n${result.stderr}`);
      if (timedOut) reject(new Error(`${program} ${args.join(" ")} did not finish within ${timeoutMs}ms:\n${result.stderr}`));
      else resolve(result);
    });
  });
}

/** A real OpenSSH server on 127.0.0.1 (of its network namespace) that lets in `user` with `keyFile` only. */
export interface Sshd {
  port: number;
  /** Who the test logs in as: the user the tests run as (sshd not run as root admits only it). */
  user: string;
  /** `${user}@127.0.0.1`, for ssh's and scp's destination. */
  target: string;
  /** The client's private key, the only one authorized. */
  keyFile: string;
  /** The server's temporary folder (config, keys): a place for remote files too. */
  dir: string;
  /**
   * What a client needs besides the port and the destination: the key, no known_hosts, no
   * prompts, no user config. `ssh ...sshOptions -p PORT target cmd`, or with `-o ProxyCommand=...`.
   */
  sshOptions: string[];
  /** `ssh` to this server running `command` (from inside its namespace, if it has one). */
  ssh(command: string, options?: { input?: string | Uint8Array; timeoutMs?: number }): Promise<RunResult>;
  /**
   * TCP connections the server has accepted so far (its "Connection from" lines), whether or
   * not they logged in: what reached it.
   */
  connections(): number;
  /** The listener and the per-connection processes it forked. */
  pids(): number[];
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts `sshd -D -e` with a config, host key and client key of its own in a temporary folder;
 * with `netns`, inside that network namespace (`ip netns exec`, which needs root), on its loopback.
 */
export async function startSshd(options: { netns?: string } = {}): Promise<Sshd> {
  const sshd = findProgram("sshd");
  // sshd re-executes itself for each connection, so it insists on an absolute path.
  if (!sshd) throw new Error("sshd is not installed (apt-get install openssh-server)");
  const dir = mkdtempSync(join(tmpdir(), "burrow-sshd-"));
  const keygen = (file: string) => execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "burrow-test", "-f", file]);
  keygen(join(dir, "host_key"));
  keygen(join(dir, "client_key"));
  copyFileSync(join(dir, "client_key.pub"), join(dir, "authorized_keys"));
  const user = userInfo().username;
  // As root, sshd needs its privilege separation folder (Debian's init script makes it; in a
  // container nothing has); not as another user, which can only ever log in as itself.
  if (process.getuid?.() === 0) mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  // A free port here is free in a namespace's own loopback too.
  const port = await freePort();
  const config = join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${join(dir, "host_key")}`,
      // This folder's key only: never the users' own ~/.ssh/authorized_keys.
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `AllowUsers ${user}`,
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "HostbasedAuthentication no",
      "PermitRootLogin prohibit-password",
      // StrictModes checks every folder up to the key file: "bad ownership or modes for directory /tmp".
      "StrictModes no",
      "UsePAM no",
      "PidFile none",
      "AllowTcpForwarding yes",
      // scp speaks SFTP since OpenSSH 9.0; internal-sftp needs no sftp-server binary.
      "Subsystem sftp internal-sftp",
      // Tests open many connections at once; the defaults (10:30:100, 10) start refusing them.
      "MaxStartups 200",
      "MaxSessions 200",
      // VERBOSE logs each accepted connection ("Connection from ..."), even one that never logs in.
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );
  // `ip netns exec` execs sshd in place: the pid, and so pids(), stay sshd's.
  const inNetns = (argv: string[]) =>
    (options.netns ? ["ip", ["netns", "exec", options.netns, ...argv]] : [argv[0]!, argv.slice(1)]) as [string, string[]];
  const child = new Child("sshd", ...inNetns([sshd, "-D", "-e", "-f", config]));
  try {
    await child.waitFor(/^Server listening on 127\.0\.0\.1 port/, { timeoutMs: 10_000 });
  } catch (error) {
    await child.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const keyFile = join(dir, "client_key");
  // -F /dev/null: none of the user's ~/.ssh/config; IdentitiesOnly: not the agent's keys either.
  const client = [
    "IdentitiesOnly=yes",
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "LogLevel=ERROR",
    "BatchMode=yes",
  ];
  const sshOptions = ["-F", "/dev/null", "-i", keyFile, ...client.flatMap((option) => ["-o", option])];
  const target = `${user}@127.0.0.1`;
  return {
    port,
    user,
    target,
    keyFile,
    dir,
    sshOptions,
    ssh: (command, runOptions) => sshRun(...inNetns(["ssh", ...sshOptions, "-p", String(port), target, command]), runOptions),
    connections: () => child.lines.filter((line) => line.startsWith("Connection from ")).length,
    pids: () => processTree(child.pid),
    output: () => child.output,
    async stop() {
      // Each connection's process calls setsid(), out of the listener's group: stop them too.
      const sessions = processTree(child.pid).slice(1);
      await child.stop();
      for (const pid of sessions) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A local port forwarded by `ssh -N -L` through `sshd` to 127.0.0.1:`targetPort`. */
export interface SshForward {
  port: number;
  /** The ssh client and the server's processes. */
  pids(): number[];
  stop(): Promise<void>;
}

/** `ssh -N -L 127.0.0.1:<free port>:127.0.0.1:<targetPort>` through `sshd`; resolves once it listens. */
export async function sshForward(sshd: Sshd, targetPort: number): Promise<SshForward> {
  const port = await freePort();
  const forward = `127.0.0.1:${port}:127.0.0.1:${targetPort}`;
  const child = new Child("ssh -L", "ssh", [
    ...sshd.sshOptions,
    ...["-N", "-o", "ExitOnForwardFailure=yes", "-L", forward, "-p", String(sshd.port), sshd.target],
  ]);
  try {
    await waitForListen(child, port, "127.0.0.1", 10_000);
  } catch (error) {
    await child.stop("SIGKILL");
    throw error;
  }
  return {
    port,
    pids: () => [child.pid, ...sshd.pids()],
    stop: async () => void (await child.stop()),
  };
}
