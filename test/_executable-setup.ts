// Vitest global setup: the executable is built once per test run (about 0.2 s, 100 MB), for
// every file that runs it, and removed at the end.
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import type { TestProject } from "vitest/node";
import { buildExecutable } from "./_package.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** Path of the agent executable `npm run build:binary` built for this run. */
    agentExecutable: string;
  }
}

export default async function setup(project: TestProject): Promise<() => void> {
  const executable = await buildExecutable();
  project.provide("agentExecutable", executable);
  return () => rmSync(dirname(executable), { recursive: true, force: true });
}
