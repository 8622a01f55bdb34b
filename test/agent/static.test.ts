import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StaticServer, serveDirectory } from "../../agent/src/static.ts";

let server: StaticServer;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-static-"));
  const site = join(dir, "site");
  mkdirSync(join(site, "empty"), { recursive: true });
  writeFileSync(join(site, "index.html"), "home");
  writeFileSync(join(site, "data.bin"), "bytes");
  writeFileSync(join(dir, "secret.txt"), "secret");
  symlinkSync(dir, join(site, "up"));
  server = await serveDirectory(site);
});

afterAll(() => server.close());

/** A request with its path sent exactly as given (fetch and URL would remove `..`). */
function raw(path: string, method = "GET"): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port: server.port, path, method }, (response) => {
      let body = "";
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode!, type: String(response.headers["content-type"]), body }));
    });
    request.on("error", reject);
    request.end();
  });
}

describe("the --dir file server", () => {
  it.each([
    ["/", 200, "home"],
    ["/index.html?x=1", 200, "home"],
    ["/data.bin", 200, "bytes"],
    ["/empty/", 404, "not found\n"],
    ["/nope", 404, "not found\n"],
    ["/../secret.txt", 403, "forbidden\n"],
    ["/x/../../secret.txt", 403, "forbidden\n"],
    ["/%2e%2e/secret.txt", 403, "forbidden\n"],
    ["/..%5csecret.txt", 403, "forbidden\n"],
    ["/up/secret.txt", 403, "forbidden\n"],
    ["/%00", 403, "forbidden\n"],
    ["/%zz", 400, "bad percent-encoding in the path\n"],
  ])("answers %s with %i", async (path, status, body) => {
    expect(await raw(path)).toMatchObject({ status, body });
  });

  it("labels files by extension, unknown ones as application/octet-stream", async () => {
    expect((await raw("/")).type).toBe("text/html; charset=utf-8");
    expect((await raw("/data.bin")).type).toBe("application/octet-stream");
  });

  it("answers HEAD without a body and refuses other methods with 405", async () => {
    expect(await raw("/", "HEAD")).toMatchObject({ status: 200, body: "" });
    expect(await raw("/", "DELETE")).toMatchObject({ status: 405 });
  });
});
