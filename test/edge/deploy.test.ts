import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect, it } from "vitest";
import { ROOT } from "../_relay.ts";

it("builds the Worker for production with wrangler deploy --dry-run", async () => {
  const outdir = mkdtempSync(join(tmpdir(), "burrow-deploy-"));
  try {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", outdir],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false" } },
    );
    expect(stdout).toContain("env.TUNNELS (TunnelObject)");
    expect(stdout).toContain("--dry-run: exiting now.");
    expect(readdirSync(outdir)).toContain("index.js");
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}, 60_000);
