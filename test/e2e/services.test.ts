// The real services the TCP tunnel's tests and bench use (test/_services.ts), reached directly,
// no tunnel: so that a failure there is the tunnel's, not the harness's.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256 } from "../_bytes.ts";
import { freePort } from "../_process.ts";
import {
  type RedisServer,
  redisBenchmark,
  type Sshd,
  skipServices,
  sshForward,
  sshRun,
  startRedis,
  startSshd,
} from "../_services.ts";

const skip = skipServices("the real-service harness (sshd, redis-server)");

describe.skipIf(skip)("real services on loopback, reached directly", () => {
  let sshd: Sshd;
  let redis: RedisServer;
  const local = mkdtempSync(join(tmpdir(), "burrow-services-"));

  beforeAll(async () => {
    [sshd, redis] = await Promise.all([startSshd(), startRedis()]);
  });
  afterAll(async () => {
    await Promise.all([sshd?.stop(), redis?.stop()]);
    rmSync(local, { recursive: true, force: true });
  });

  it("runs a command over ssh with the test's key", async () => {
    const result = await sshd.ssh("echo hi");
    expect(result).toMatchObject({ code: 0, stdout: "hi\n" });
  });

  it("refuses a key it was not given", async () => {
    const stranger = join(local, "stranger");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", stranger]);
    const options = sshd.sshOptions.map((option) => (option === sshd.keyFile ? stranger : option));
    const result = await sshRun("ssh", [...options, "-p", String(sshd.port), sshd.target, "echo hi"]);
    expect(result.code).toBe(255);
    expect(result.stderr).toContain("Permission denied");
    expect(result.stdout).toBe("");
  });

  it("copies a 5 MB random file there and back with scp, unchanged", async () => {
    const bytes = randomBytes(5 * 1024 * 1024);
    writeFileSync(join(local, "there.bin"), bytes);
    const scp = (from: string, to: string) => sshRun("scp", [...sshd.sshOptions, "-P", String(sshd.port), from, to]);
    const remote = `${sshd.target}:${join(sshd.dir, "remote.bin")}`;
    expect(await scp(join(local, "there.bin"), remote)).toMatchObject({ code: 0, stderr: "" });
    expect(await scp(remote, join(local, "back.bin"))).toMatchObject({ code: 0, stderr: "" });
    expect(sha256(readFileSync(join(local, "back.bin")))).toBe(sha256(bytes));
  });

  it("answers every GET and SET of redis-benchmark with 100 clients", async () => {
    const result = await redisBenchmark({ port: redis.port, clients: 100, requests: 50_000 });
    expect(result.errors, result.output).toBe(0);
    expect(result.opsPerSecond.GET).toBeGreaterThan(0);
    expect(result.opsPerSecond.SET).toBeGreaterThan(0);
  });

  it("reaches redis through an ssh -L forward, the bench's tcp-ssh path", async () => {
    const forward = await sshForward(sshd, redis.port);
    try {
      const result = await redisBenchmark({ port: forward.port, clients: 50, requests: 10_000 });
      expect(result.errors, result.output).toBe(0);
      expect(result.opsPerSecond.GET).toBeGreaterThan(0);
    } finally {
      await forward.stop();
    }
  });

  it("counts a refused connection as an error instead of waiting for redis-benchmark", async () => {
    // Nothing listens there: redis-benchmark 7.0 would retry forever at full CPU.
    const result = await redisBenchmark({ port: await freePort(), requests: 100, timeoutMs: 10_000 });
    expect(result.errors).toBeGreaterThan(0);
    expect(result.opsPerSecond).toEqual({});
  });
});
