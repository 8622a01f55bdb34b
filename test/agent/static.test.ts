import { mkdirSync, mkdtempSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MAX_LISTED_ENTRIES } from "@burrow/protocol";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StaticServer, serveDirectory } from "../../agent/src/static.ts";
import { AgentProcess } from "../_agent.ts";
import { Relay } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

let server: StaticServer;
/** The same directory served with dotfiles allowed (`--dir-dotfiles`). */
let open: StaticServer;
let site: string;

/** The files of the folder `listed/`, which has no index.html. */
const LISTED_FILES: Record<string, string> = {
  "<img src=x onerror=alert(1)>.txt": "tag",
  'quote"d.txt': "quote",
  "a&b.txt": "ampersand",
  "hash#1.txt": "hash",
  "what?.txt": "question",
  "100%.txt": "percent",
  "%41.txt": "not A",
  "with space.txt": "space",
  "ünïcødé ✓.txt": "unicode",
  "javascript:alert(1)": "colon",
  kilo: "k".repeat(2048),
};
const MODIFIED = new Date("2001-02-03T04:05:06Z");

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "burrow-static-"));
  site = join(dir, "site");
  mkdirSync(join(site, "empty"), { recursive: true });
  writeFileSync(join(site, "index.html"), "home");
  writeFileSync(join(site, "data.bin"), "bytes");
  writeFileSync(join(dir, "secret.txt"), "secret");
  symlinkSync(dir, join(site, "up"));
  // What a project's folder holds and nobody meant to publish, and a folder named like a host.
  writeFileSync(join(site, ".env"), "API_KEY=s3cret");
  mkdirSync(join(site, ".git"));
  writeFileSync(join(site, ".git", "config"), "[remote]");
  mkdirSync(join(site, "docs", ".private"), { recursive: true });
  writeFileSync(join(site, "docs", ".private", "key.pem"), "key");
  writeFileSync(join(site, "docs", "index.html"), "docs");
  symlinkSync(join(site, ".git"), join(site, "git"));
  mkdirSync(join(site, "evil.example"));
  writeFileSync(join(site, "evil.example", "index.html"), "a folder");
  mkdirSync(join(site, "a b"));
  // A folder without an index.html, with names that need escaping in HTML and in a URL.
  const listed = join(site, "listed");
  mkdirSync(join(listed, "z folder"), { recursive: true });
  mkdirSync(join(listed, "A<folder>"));
  mkdirSync(join(listed, ".dot-folder"));
  for (const [name, content] of Object.entries(LISTED_FILES)) writeFileSync(join(listed, name), content);
  writeFileSync(join(listed, ".hidden"), "hidden");
  writeFileSync(join(listed, "back\\slash"), "unreachable: the server reads a backslash as a separator");
  symlinkSync(dir, join(listed, "outside"));
  symlinkSync(join(listed, ".dot-folder"), join(listed, "into-dot-folder"));
  utimesSync(join(listed, "kilo"), MODIFIED, MODIFIED);
  const many = join(site, "many");
  mkdirSync(many);
  for (let i = 0; i < MAX_LISTED_ENTRIES + 5; i++) writeFileSync(join(many, `file-${i}`), "");
  [server, open] = await Promise.all([serveDirectory(site), serveDirectory(site, { dotfiles: true })]);
});

afterAll(() => {
  server.close();
  open.close();
});

interface Answer {
  status: number;
  type: string;
  location: string | undefined;
  body: string;
}

/** A request with its path sent exactly as given (fetch and URL would remove `..`). */
function raw(path: string, method = "GET", to = server): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port: to.port, path, method }, (response) => {
      let body = "";
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () =>
        resolve({
          status: response.statusCode!,
          type: String(response.headers["content-type"]),
          location: response.headers.location,
          body,
        }),
      );
    });
    request.on("error", reject);
    request.end();
  });
}

/** True when a browser on `page` would go to `location` on the same origin (WHATWG URL). */
function sameOrigin(location: string, page = "http://tunnel.test/"): boolean {
  return new URL(location, page).origin === new URL(page).origin;
}

describe("the --dir file server", () => {
  it.each([
    ["/", 200, "home"],
    ["/index.html?x=1", 200, "home"],
    ["/data.bin", 200, "bytes"],
    ["/up/", 403, "forbidden\n"],
    ["/git/", 404, "not found\n"],
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

describe("the --dir file server's hidden names", () => {
  it.each([
    "/.env",
    "/.git/config",
    "/.git",
    "/.git/",
    "/%2egit/config",
    "/%2Eenv",
    "/docs/.private/key.pem",
    "/docs/%2eprivate/key.pem",
    "/docs\\.private\\key.pem",
    "/./.env",
    "/git/config",
  ])("answers %s with 404, as if it were not there", async (path) => {
    expect(await raw(path)).toMatchObject({ status: 404, body: "not found\n" });
  });

  it("serves them with dotfiles allowed (--dir-dotfiles)", async () => {
    expect(await raw("/.env", "GET", open)).toMatchObject({ status: 200, body: "API_KEY=s3cret" });
    expect(await raw("/docs/.private/key.pem", "GET", open)).toMatchObject({ status: 200, body: "key" });
    expect(await raw("/git/config", "GET", open)).toMatchObject({ status: 200, body: "[remote]" });
  });
});

describe("the --dir file server's redirects", () => {
  it.each([
    ["//evil.example", "/evil.example/"],
    ["/\\evil.example", "/evil.example/"],
    ["/%5Cevil.example", "/evil.example/"],
    ["///evil.example", "/evil.example/"],
    ["/./evil.example", "/evil.example/"],
    ["/docs", "/docs/"],
    ["/a%20b", "/a%20b/"],
    ["/docs/%2e", "/docs/"],
  ])("sends %s to %s, a path of the same site", async (path, location) => {
    expect(await raw(path)).toMatchObject({ status: 301, location });
  });

  it("sends every folder asked for without its slash to a path of the same site", async () => {
    const segment = fc.constantFrom("", ".", "evil.example", "docs", "a%20b", "%2F", "%5C", "\\", "%2e", "%09", "x");
    const path = fc.array(segment, { minLength: 1, maxLength: 5 }).map((segments) => `/${segments.join("/")}`);
    await fc.assert(
      fc.asyncProperty(path, async (sent) => {
        const answer = await raw(sent);
        if (answer.status !== 301) return;
        expect(answer.location).toMatch(/^\/(?![/\\])/);
        expect(sameOrigin(answer.location!)).toBe(true);
        // Followed, it reaches the folder (its index.html, or 404 for one without).
        expect([200, 404]).toContain((await raw(answer.location!)).status);
      }),
      { numRuns: 300 },
    );
  });
});

/** The links of a listing, as a browser reads them: href and text with HTML's escapes undone. */
function links(html: string): { href: string; text: string }[] {
  const decode = (text: string) =>
    text.replace(/&(amp|lt|gt|quot|#39);/g, (_, name: string) => ({ amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'" })[name]!);
  return [...html.matchAll(/<a href="([^"]*)">([^<]*)<\/a>/g)].map(([, href, text]) => ({
    href: decode(href!),
    text: decode(text!),
  }));
}

describe("the --dir file server's folder listings", () => {
  const files = Object.keys(LISTED_FILES);

  it("lists a folder without an index.html, folders first, with names escaped and links that reach each entry", async () => {
    const page = await raw("/listed/");
    expect(page).toMatchObject({ status: 200, type: "text/html; charset=utf-8" });
    expect(page.body).not.toContain("<img");
    const found = links(page.body);
    const sorted = [...files].sort((a, b) => a.localeCompare(b, "en", { numeric: true, sensitivity: "base" }));
    expect(found.map((link) => link.text)).toEqual(["../", "A<folder>/", "z folder/", ...sorted]);
    for (const { href, text } of found) {
      // Relative, so the page's own origin and path prefix (the relay's /t/<name>/) carry over.
      expect(href).not.toMatch(/^[a-z][a-z0-9+.-]*:|^[/\\]/i);
      const target = new URL(href, "http://tunnel.test/listed/");
      expect(target.origin).toBe("http://tunnel.test");
      const answer = await raw(target.pathname);
      expect(answer.status, `${text} at ${target.pathname}`).toBe(200);
      if (!text.endsWith("/")) expect(answer.body).toBe(LISTED_FILES[text]);
    }
  });

  it("shows each file's size and modification time, and a folder's as -", async () => {
    const { body } = await raw("/listed/");
    expect(body).toMatch(
      />kilo<\/a><\/td><td class="size">2\.0 KiB<\/td><td><time datetime="2001-02-03T04:05:06\.000Z">2001-02-03 04:05 UTC</,
    );
    expect(body).toMatch(/>a&amp;b\.txt<\/a><\/td><td class="size">9 B</);
    expect(body).toMatch(/>z folder\/<\/a><\/td><td class="size">-</);
  });

  it("hides dotfiles and links into dot-folders unless dotfiles are allowed, and never lists a link that leaves the folder", async () => {
    const hiding = links((await raw("/listed/")).body).map((link) => link.text);
    const showing = links((await raw("/listed/", "GET", open)).body).map((link) => link.text);
    for (const name of [".hidden", ".dot-folder/", "into-dot-folder/"]) {
      expect(hiding).not.toContain(name);
      expect(showing).toContain(name);
    }
    expect([...hiding, ...showing].filter((name) => /outside|slash/.test(name))).toEqual([]);
  });

  it("lists the top folder and an empty one, answers HEAD without a body, and still redirects a folder without its slash", async () => {
    expect(links((await raw("/empty/")).body)).toEqual([{ href: "../", text: "../" }]);
    const headed = await raw("/listed/", "HEAD");
    expect(headed).toMatchObject({ status: 200, type: "text/html; charset=utf-8", body: "" });
    expect(await raw("/listed")).toMatchObject({ status: 301, location: "/listed/" });
    const empty = await serveDirectory(join(site, "empty"));
    try {
      expect((await raw("/", "GET", empty)).body).toContain("<h1>Index of /</h1>");
    } finally {
      empty.close();
    }
  });

  it(`lists at most ${MAX_LISTED_ENTRIES} entries of a large folder and says how many it left out`, async () => {
    const { status, body } = await raw("/many/");
    expect(status).toBe(200);
    expect(links(body).filter((link) => link.text.startsWith("file-"))).toHaveLength(MAX_LISTED_ENTRIES);
    expect(body).toContain(`<p>5 more entries not listed: a page lists at most ${MAX_LISTED_ENTRIES}.</p>`);
  });
});

describe("--dir through the relay", () => {
  let relay: Relay;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    relay = await Relay.start({ launcher: "workerd" });
  });

  afterAll(async () => {
    for (const agent of agents) await agent.stop("SIGKILL");
    await relay?.dispose();
  });

  async function agent(args: string[]): Promise<AgentProcess> {
    const started = await AgentProcess.start("node", ["--relay", relay.url, "--inspect", "false", ...args]);
    agents.push(started);
    return started;
  }

  it("hides dotfiles unless --dir-dotfiles or dir-dotfiles = true in burrow.toml, and redirects within the tunnel", async () => {
    const hiding = await agent(["--dir", site, "--name", "hiding"]);
    const byHost = hiding.url;
    expect((await visit(at(byHost, "/.env"))).status).toBe(404);
    expect((await visit(at(byHost, "/.git/config"))).status).toBe(404);
    expect((await visit(`${byHost}//evil.example`)).headers.location).toBe("/evil.example/");
    // Reached by path, the relay puts the tunnel's prefix on the redirect, as on an origin's own.
    const byPath = `http://localhost:${relay.port}/t/hiding`;
    const redirected = await visit(`${byPath}//evil.example`);
    expect([redirected.status, redirected.headers.location]).toEqual([301, "/t/hiding/evil.example/"]);
    expect((await visit(`http://localhost:${relay.port}${redirected.headers.location}`)).body.toString()).toBe("a folder");

    const showing = await agent(["--dir", site, "--dir-dotfiles", "--name", "showing"]);
    expect((await visit(at(showing.url, "/.env"))).body.toString()).toBe("API_KEY=s3cret");
    const config = join(mkdtempSync(join(tmpdir(), "burrow-static-toml-")), "burrow.toml");
    writeFileSync(config, `[[tunnel]]\nname = "from-file"\ndir = ${JSON.stringify(site)}\ndir-dotfiles = true\n`);
    const fromFile = await agent(["--config", config]);
    expect((await visit(at(fromFile.url, "/.git/config"))).body.toString()).toBe("[remote]");
  });

  it.each(["node", "bun", "deno"] as const)(
    "on %s, lists a folder by host and by path, its relative links staying inside the tunnel",
    async (runtime) => {
      const name = `listing-${runtime}`;
      const listing = await AgentProcess.start(runtime, [
        "--relay",
        relay.url,
        "--inspect",
        "false",
        "--dir",
        site,
        "--name",
        name,
      ]);
      agents.push(listing);
      for (const page of [at(listing.url, "/listed/"), `http://localhost:${relay.port}/t/${name}/listed/`]) {
        const found = links((await visit(page)).body.toString());
        expect(found.length).toBe(Object.keys(LISTED_FILES).length + 3);
        for (const { href, text } of found.filter((link) => !link.text.endsWith("/"))) {
          const target = new URL(href, page).href;
          expect(target.startsWith(page), target).toBe(true);
          expect((await visit(target)).body.toString()).toBe(LISTED_FILES[text]);
        }
      }
    },
  );
});
