import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AgentProcess, type RuntimeName } from "../_agent.ts";
import { Child } from "../_process.ts";
import { ROOT } from "../_relay.ts";

const RUNTIMES: RuntimeName[] = ["node", "bun", "deno"];

async function run(
  runtime: RuntimeName,
  args: string[],
  env?: NodeJS.ProcessEnv,
): Promise<{ status: number | null; output: string }> {
  const agent = new AgentProcess(runtime, args, env);
  const status = await agent.exited;
  return { status, output: agent.output };
}

describe("agent command line", () => {
  it("prints the same --help on every runtime, listing each flag with its variable and default", async () => {
    const outputs = await Promise.all(RUNTIMES.map((runtime) => run(runtime, ["--help"])));
    for (const { status } of outputs) expect(status).toBe(0);
    expect(outputs[1]!.output).toBe(outputs[0]!.output);
    expect(outputs[2]!.output).toBe(outputs[0]!.output);
    for (const flag of ["port", "host", "relay", "name", "token", "heartbeat", "debug"]) {
      expect(outputs[0]!.output).toMatch(new RegExp(`--${flag}\\b.*env BURROW_${flag.toUpperCase()}`));
    }
    expect(outputs[0]!.output).toContain("default: `agent login`'s, else http://localhost:8787");
    expect(outputs[0]!.output).toContain("agent login --relay URL");
  });

  it("prints the package version and runtime with --version on every runtime", async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, "agent/package.json"), "utf8"));
    for (const runtime of RUNTIMES) {
      const { status, output } = await run(runtime, ["--version"]);
      expect(status).toBe(0);
      expect(output).toMatch(new RegExp(`^agent ${version.replaceAll(".", "\\.")} \\(${runtime} \\d+\\.\\d+\\.\\d+\\)$`));
    }
  });

  it.each(RUNTIMES)("on %s, exits 2 with a hint for a missing port, a bad port or an unknown flag", async (runtime) => {
    const missing = await run(runtime, []);
    expect(missing.status).toBe(2);
    expect(missing.output).toBe(
      "error: which local port should the tunnel expose?\n  hint: pass it with --port, for example: agent --port 8000",
    );
    expect(await run(runtime, ["--port", "http"])).toMatchObject({
      status: 2,
      output: expect.stringContaining("--port http is not a port number"),
    });
    expect(await run(runtime, ["--port", "80", "--nmae", "x"])).toMatchObject({
      status: 2,
      output: expect.stringContaining('unknown argument "--nmae"'),
    });
    expect(await run(runtime, ["--port", "80", "--name", "Bad_Name"])).toMatchObject({
      status: 2,
      output: expect.stringContaining('"Bad_Name" is not a tunnel name'),
    });
  });

  it.each([
    ["npx agent", "node"],
    ["bunx --bun agent", "bun"],
    ["bunx agent", "node"],
    ["deno task agent", "deno"],
  ])("runs as the README says: %s --version", async (command, runtime) => {
    const path = `${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`;
    const shell = new Child(command, "/bin/sh", ["-c", `${command} --version`], {
      cwd: ROOT,
      env: { ...process.env, PATH: path },
    });
    expect(await shell.exited).toBe(0);
    expect(shell.output).toMatch(new RegExp(`^agent \\S+ \\(${runtime} `, "m"));
  });

  it("says which Deno flag is missing when run without the task's permissions", async () => {
    const deno = new Child(
      "deno",
      join(ROOT, "node_modules/.bin/deno"),
      ["run", "--allow-env", "--allow-read", "agent/bin/deno.ts", "--port", "8000", "--relay", "http://127.0.0.1:9"],
      { cwd: ROOT },
    );
    expect(await deno.exited).toBe(4);
    expect(deno.output).toMatch(/error: Deno did not grant a permission the agent needs: .*net access/);
    expect(deno.output).toContain("hint: run it with `deno task agent`, or add --allow-net");
  });

  it("grants the Deno task exactly the environment variables the agent reads", async () => {
    const { ENV_VARS } = await import("../../agent/src/cli.ts");
    const { WS_ENV_VARS } = await import("../../agent/src/sockets.ts");
    const task = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).tasks.agent.command as string;
    expect(/--allow-env=(\S+)/.exec(task)![1]!.split(",").sort()).toEqual([...ENV_VARS, ...WS_ENV_VARS].sort());
  });
});
