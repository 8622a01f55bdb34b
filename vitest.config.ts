import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/_executable-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 90_000,
    // Each end-to-end file starts its own relay (workerd) and agents; two at a time suits 2 cores.
    maxWorkers: 2,
  },
});
