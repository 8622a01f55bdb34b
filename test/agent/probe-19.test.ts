import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StaticServer, serveDirectory } from "../../agent/src/static.ts";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";
import { visit } from "../_visit.ts";

// Issue 19's rerun for `--dir`: dotfiles, open redirects and the listing, with inputs that
// test/agent/static.test.ts does not use.

let server: StaticServer;
let site: string;
let outside: string;

/** Names for the listing's folder: each would be markup, a script or a link elsewhere unescaped. */
const NASTY = [
  "</title><script>alert(1)</script>",
  '"><svg onload=alert(1)>',
  "'><iframe src=//evil.example>",
  "a\nb<br>",
  "&lt;b&gt;",
  "%2e%2e",
  "\u202egnp.exe",
  "//evil.example",
  "data:text",
];

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-probe19-"));
  site = join(dir, "site");
  outside = join(dir, ".outside-secret");
  mkdirSync(join(site, "evil.example"), { recursive: true });
  mkdirSync(join(site, "docs", ".private"), { recursive: true });
  mkdirSync(join(site, ".git"));
  writeFileSync(join(site, "index.html"), "home");
  writeFileSync(join(site, ".env"), "API_KEY=s3cret");
  writeFileSync(join(site, ".git", "config"), "[remote]");
  writeFileSync(join(site, "docs", ".private", "key.pem"), "key");
  writeFileSync(join(site, "%2eenv"), "a plain name, not a dotfile");
  writeFileSync(outside, "outside");
  // Plain names that lead to dotfiles, inside and outside the directory.
  symlinkSync(join(site, ".env"), join(site, "env-link"));
  symlinkSync(".git", join(site, "git-link"));
  symlinkSync(join(site, "docs", ".private"), join(site, "docs", "private-link"));
  symlinkSync(outside, join(site, "outside-link"));
  const listed = join(site, "listed");
  mkdirSync(listed);
  for (const name of NASTY) {
    // A "/" cannot be in a file name: those become folders, which the listing shows as such.
    if (name.includes("/")) mkdirSync(join(listed, ...name.split("/").filter(Boolean)), { recursive: true });
    else writeFileSync(join(listed, name), "x");
  }
  symlinkSync(join(site, ".env"), join(listed, "plain-name"));
  server = await serveDirectory(site);
});

afterAll(() => server?.close());

function raw(path: string, port = server.port): Promise<{ status: number; location?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port, path }, (response) => {
      let body = "";
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode!, location: response.headers.location, body }));
    });
    request.on("error", reject);
    request.end();
  });
}

describe("--dir's dotfiles, rerun", () => {
  it.each([
    "/%2eenv%2e",
    "/%2Eenv",
    "/.%65nv",
    "/%2e%65%6e%76",
    "/\\.env",
    "/%5c.env",
    "/docs%5c.private%5ckey.pem",
    "/docs/%2e%70rivate/key.pem",
    "/.git%2fconfig",
    "/%2e/.env",
    "/./.env",
    "/env-link",
    "/git-link/config",
    "/git-link/",
    "/docs/private-link/key.pem",
    "/docs/private-link/",
  ])("does not serve %s", async (path) => {
    const answer = await raw(path);
    expect([403, 404]).toContain(answer.status);
    expect(answer.body).not.toMatch(/s3cret|\[remote\]|^key$/);
  });

  it("serves a file named %2eenv for a double-encoded dot, and nothing outside for a plain link", async () => {
    expect(await raw("/%252eenv")).toMatchObject({ status: 200, body: "a plain name, not a dotfile" });
    expect(await raw("/outside-link")).toMatchObject({ status: 403 });
  });
});

describe("--dir's redirects, rerun", () => {
  const paths = [
    "//evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "/\\\\evil.example",
    "/./%2F/evil.example",
    "/%2F.%2Fevil.example",
    "///evil.example",
  ];
  it.each(paths)("redirects %s to a path of its own origin", async (path) => {
    const answer = await raw(path);
    expect(answer.status).toBe(301);
    expect(answer.location).toBe("/evil.example/");
  });

  it("drops no tab or newline that would turn a Location into another host", async () => {
    for (const path of ["/%09/evil.example", "/%0a/evil.example", "/%0d%0a/evil.example", "/%20/evil.example"]) {
      const answer = await raw(path);
      if (answer.location !== undefined) {
        expect(new URL(answer.location, "http://tunnel.test/").origin, path).toBe("http://tunnel.test");
      } else expect(answer.status, path).toBe(404);
    }
  });
});

describe("--dir's listing, rerun", () => {
  it("shows each odd name as text with a link inside the folder, and no link to a dotfile", async () => {
    const page = await raw("/listed/");
    expect(page.status).toBe(200);
    expect(page.body).not.toMatch(/<script|<svg|<iframe|<br>/i);
    const hrefs = [...page.body.matchAll(/href="([^"]*)"/g)].map((match) => match[1]!.replaceAll("&amp;", "&"));
    for (const href of hrefs) {
      const target = new URL(href, "http://tunnel.test/listed/");
      expect(target.origin, href).toBe("http://tunnel.test");
      if (href !== "../") expect(target.pathname.startsWith("/listed/"), href).toBe(true);
    }
    // A plain name that links to a dotfile is not listed, as it is not served.
    expect(page.body).not.toContain("plain-name");
    expect(await raw("/listed/plain-name")).toMatchObject({ status: 404 });
    // Each file is served at its link.
    for (const name of NASTY.filter((n) => !n.includes("/"))) {
      expect((await raw(`/listed/${encodeURIComponent(name)}`)).status, name).toBe(200);
    }
  });
});

describe("--dir behind the relay's path form, rerun", () => {
  let relay: Relay;
  let agent: AgentProcess;

  beforeAll(async () => {
    relay = await Relay.start();
    agent = await AgentProcess.start("node", ["--relay", relay.url, "--name", "site", "--dir", site]);
  });

  afterAll(async () => {
    await agent?.stop("SIGINT");
    await relay?.dispose();
  });

  it("keeps folder redirects under the tunnel's prefix, whatever slashes the path starts with", async () => {
    for (const rest of ["/%2F%2Fevil.example", "/%5Cevil.example", "//evil.example", "/evil.example"]) {
      const response = await visit(`http://127.0.0.1:${relay.port}/t/site${rest}`);
      expect(response.status, rest).toBe(301);
      expect(response.headers.location, rest).toBe("/t/site/evil.example/");
    }
    for (const path of ["/t/site/%2eenv", "/t/site/.git/config", "/t/site/git-link/config", "/t/site/%5C.env"]) {
      const response = await visit(`http://127.0.0.1:${relay.port}${path}`);
      expect(response.status, path).toBe(404);
    }
  });
});
