import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, sep } from "node:path";
import { listDirectory } from "./static-listing.ts";

/** Content-Type by extension; anything else is application/octet-stream. */
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".xml": "application/xml",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".otf": "font/otf",
  ".wasm": "application/wasm",
  ".pdf": "application/pdf",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mp3": "audio/mpeg",
  ".wav": "audio/wav",
  ".zip": "application/zip",
  ".gz": "application/gzip",
};

/** A running file server for `agent --dir`. */
export interface StaticServer {
  port: number;
  close(): void;
}

export interface StaticOptions {
  /**
   * Serve names that start with a dot (`--dir-dotfiles`). Off, any path with such a segment is
   * 404, as with the static servers people know (serve-static, nginx's usual config): a site's
   * folder often holds `.env`, `.git/` or keys nobody meant to publish.
   */
  dotfiles?: boolean;
}

/**
 * Serves the files under `root` on 127.0.0.1 (a free port): GET and HEAD only, index.html for a
 * directory or else its listing (see listDirectory), 404 for anything missing or hidden (see
 * StaticOptions.dotfiles), 403 for a path that leaves the directory (a `..` segment, even
 * percent-encoded, or a symbolic link that points outside).
 */
export async function serveDirectory(root: string, options: StaticOptions = {}): Promise<StaticServer> {
  const base = await realpath(root);
  const dotfiles = options.dotfiles === true;
  const server = http.createServer((request, response) => {
    answer(base, dotfiles, request, response).catch(() => {
      if (!response.headersSent) reply(response, 500, "could not read the file\n");
      else response.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** True when a segment of `segments` names a dotfile or dot-folder ("." itself is no name). */
function hidden(segments: string[]): boolean {
  return segments.some((segment) => segment.startsWith(".") && segment !== ".");
}

async function answer(
  base: string,
  dotfiles: boolean,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<void> {
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.setHeader("allow", "GET, HEAD");
    return reply(response, 405, "only GET and HEAD\n");
  }
  const raw = (request.url ?? "/").split(/[?#]/, 1)[0]!;
  let path: string;
  try {
    path = decodeURIComponent(raw);
  } catch {
    return reply(response, 400, "bad percent-encoding in the path\n");
  }
  const segments = path.split(/[/\\]/);
  if (path.includes("\0") || segments.includes("..")) return reply(response, 403, "forbidden\n");
  if (!dotfiles && hidden(segments)) return reply(response, 404, "not found\n");
  let file = join(base, ...segments);
  let info = await stat(file).catch(() => undefined);
  if (info?.isDirectory()) {
    if (!raw.endsWith("/")) {
      // Relative links in the index resolve against the directory only with its slash.
      response.setHeader("location", directoryLocation(segments));
      return reply(response, 301, "moved\n");
    }
    const index = join(file, "index.html");
    const indexInfo = await stat(index).catch(() => undefined);
    if (!indexInfo?.isFile()) return list(base, file, segments, dotfiles, request, response);
    file = index;
    info = indexInfo;
  }
  if (!info?.isFile()) return reply(response, 404, "not found\n");
  const real = await realpath(file);
  const refusal = outside(base, real, dotfiles);
  if (refusal) return reply(response, refusal, refusal === 403 ? "forbidden\n" : "not found\n");
  response.writeHead(200, {
    "content-type": TYPES[extname(real).toLowerCase()] ?? "application/octet-stream",
    "content-length": info.size,
    "last-modified": info.mtime.toUTCString(),
  });
  if (request.method === "HEAD") {
    response.end();
    return;
  }
  const stream = createReadStream(real);
  stream.on("error", () => response.destroy());
  stream.pipe(response);
}

/** 403 for a real path outside `base`, 404 for one in a dot-folder of it (unless `dotfiles`). */
function outside(base: string, real: string, dotfiles: boolean): 403 | 404 | undefined {
  const inside = base.endsWith(sep) ? base : base + sep;
  if (real !== base && !real.startsWith(inside)) return 403;
  // A symbolic link with a plain name may still lead into a dot-folder of the directory.
  if (!dotfiles && hidden(real.slice(inside.length).split(sep))) return 404;
  return undefined;
}

/** Answers a folder without an index.html with its listing (see listDirectory). */
async function list(
  base: string,
  folder: string,
  segments: string[],
  dotfiles: boolean,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<void> {
  const real = await realpath(folder);
  const refusal = outside(base, real, dotfiles);
  if (refusal) return reply(response, refusal, refusal === 403 ? "forbidden\n" : "not found\n");
  const page = Buffer.from(await listDirectory(real, base.endsWith(sep) ? base : base + sep, segments, dotfiles));
  response.writeHead(200, {
    "content-type": "text/html; charset=utf-8",
    "content-length": page.byteLength,
    // The page is made here and holds no script: a name that slipped past escaping could not run one.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
  });
  response.end(request.method === "HEAD" ? undefined : page);
}

/**
 * Where a directory asked for without its slash is: its path rebuilt from the decoded segments,
 * each percent-encoded, so always one "/" and then a path. The path as sent would not do:
 * `//host` or `/\\host` naming a folder would give `Location: //host/`, which browsers take for
 * another site (WHATWG URL: a backslash is a slash in http URLs, and tabs and newlines are
 * removed). A root-relative Location gets the `/t/<name>` prefix back from the relay on the
 * path form, like the origin's own redirects.
 */
export function directoryLocation(segments: string[]): string {
  const named = segments.filter((segment) => segment !== "" && segment !== ".");
  return `/${named.map(encodeURIComponent).join("/")}${named.length > 0 ? "/" : ""}`;
}

function reply(response: http.ServerResponse, status: number, text: string): void {
  response.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(text) });
  response.end(text);
}
