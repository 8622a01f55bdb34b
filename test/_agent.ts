import { join } from "node:path";
import { command, processTree } from "./_memory.ts";
import { Child } from "./_process.ts";
import { ROOT } from "./_relay.ts";

export type RuntimeName = "node" | "bun" | "deno";

/**
 * An agent started otherwise than from this clone's sources: the installed package, the
 * executable. `command` turns the agent's arguments into the argv a user would type.
 */
export interface Launcher {
  /** For output labels and tunnel names: "package-node", "executable". */
  name: string;
  command(args: string[]): [string, string[]];
  cwd: string;
  /** Replaces the test's variables of the same name (PATH, for a machine without runtimes). */
  env?: NodeJS.ProcessEnv;
}

export type AgentRuntime = RuntimeName | Launcher;

const BIN = join(ROOT, "node_modules/.bin");

/** The command a user types for each runtime (README), as argv. */
export function agentCommand(runtime: RuntimeName, args: string[]): [string, string[]] {
  switch (runtime) {
    case "node":
      return [process.execPath, [join(ROOT, "agent/bin/agent.js"), ...args]];
    case "bun":
      return [join(BIN, "bun"), [join(ROOT, "agent/bin/agent.js"), ...args]];
    case "deno":
      return [join(BIN, "deno"), ["task", "--quiet", "agent", ...args]];
  }
}

let transport: "websocket" | "https" | undefined;

/**
 * Makes every agent of this test file use `--transport <mode>`: the behaviour suites run once
 * per transport, since visitors must not see which one their tunnel's agent uses.
 */
export function useTransport(mode: "websocket" | "https"): void {
  transport = mode;
}

/** The arguments every test agent gets: its origin's port, the relay, and a tunnel name. */
export function tunnelArgs(port: number | string, relay: { url: string }, name?: string): string[] {
  return [
    "--port",
    String(port),
    "--relay",
    relay.url,
    ...(name === undefined ? [] : ["--name", name]),
    ...(transport ? ["--transport", transport] : []),
  ];
}

export interface AgentOptions {
  /** A network namespace to run the agent in (`ip netns exec <netns> ...`; needs root). */
  netns?: string;
}

/** A real agent process. */
export class AgentProcess extends Child {
  /** The public URL from the ready line. */
  url = "";

  /** `env` is added to the test's environment; a variable set to undefined is removed. */
  constructor(runtime: AgentRuntime, args: string[], env: NodeJS.ProcessEnv = {}, options: AgentOptions = {}) {
    const launcher = typeof runtime === "string" ? undefined : runtime;
    const [command, argv] = launcher ? launcher.command(args) : agentCommand(runtime as RuntimeName, args);
    // Only what a user's shell would pass; no BURROW_* leaks in from the test's environment.
    const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
    // `ip netns exec` execs the command in place: the pid, its group and runtimePid stay the agent's.
    const [program, programArgs] = options.netns ? ["ip", ["netns", "exec", options.netns, command, ...argv]] : [command, argv];
    super(`agent:${launcher?.name ?? runtime}`, program, programArgs, {
      cwd: launcher?.cwd ?? ROOT,
      env: { ...base, ...launcher?.env, ...env },
    });
  }

  /** Starts an agent and resolves once it prints its public URL. */
  static async start(
    runtime: AgentRuntime,
    args: string[],
    env?: NodeJS.ProcessEnv,
    options?: AgentOptions,
  ): Promise<AgentProcess> {
    const agent = new AgentProcess(runtime, args, env, options);
    await agent.ready();
    return agent;
  }

  /**
   * The agent's own process: for `deno task`, the `deno run` it starts; never helpers such as
   * the esbuild service Node's type-stripping hooks keep running.
   */
  get runtimePid(): number {
    return (
      processTree(this.pid)
        .filter((pid) => /^(node|bun|deno)$/.test(command(pid)))
        .at(-1) ?? this.pid
    );
  }

  /** Waits for the next "is up" line after line `from`, and records the URL. */
  async ready(from = 0): Promise<string> {
    const match = await this.waitFor(/^tunnel \S+ is up: (\S+) -> /, { from });
    this.url = match[1]!;
    return this.url;
  }
}
