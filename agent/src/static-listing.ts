import { opendir, realpath, stat } from "node:fs/promises";
import { join, sep } from "node:path";
import { MAX_LISTED_ENTRIES } from "@burrow/protocol";

/** One row of a folder's page. */
interface Entry {
  name: string;
  folder: boolean;
  size: number;
  modified: Date;
}

/**
 * The page of a folder without an index.html, as `python3 -m http.server` and ngrok's file
 * server show one: folders first (with their slash), then files, each with its size and
 * modification time, at most MAX_LISTED_ENTRIES of them and a line counting the rest.
 *
 * Lists only what the server would serve: no dotfiles unless `dotfiles`, no symbolic link that
 * leads out of `inside` (the served folder's real path with its separator) or, without
 * `dotfiles`, into a dot-folder, no name with a backslash (the server reads one as a separator).
 * Links are relative (`name`, `name/`, `../`), so they stay on the tunnel's origin and keep the
 * relay's `/t/<name>/` prefix; each name is percent-encoded in the link and HTML-escaped
 * everywhere.
 *
 * @param segments the decoded path of the folder, as the request named it.
 */
export async function listDirectory(directory: string, inside: string, segments: string[], dotfiles: boolean): Promise<string> {
  const names: string[] = [];
  let more = 0;
  // opendir reads the folder in pieces: a folder of a million names is counted, not held.
  for await (const dirent of await opendir(directory)) {
    if (!dotfiles && dirent.name.startsWith(".")) continue;
    if (dirent.name.includes("\\")) continue;
    if (names.length < MAX_LISTED_ENTRIES) names.push(dirent.name);
    else more++;
  }
  const entries = (await Promise.all(names.map((name) => describe(join(directory, name), name, inside, dotfiles)))).filter(
    (entry): entry is Entry => entry !== undefined,
  );
  entries.sort(
    (a, b) =>
      Number(b.folder) - Number(a.folder) ||
      a.name.localeCompare(b.name, "en", { numeric: true, sensitivity: "base" }) ||
      (a.name < b.name ? -1 : 1),
  );
  const named = segments.filter((segment) => segment !== "" && segment !== ".");
  const title = escapeHtml(`/${named.map((segment) => `${segment}/`).join("")}`);
  const rows = entries.map((entry) => {
    const shown = entry.folder ? `${entry.name}/` : entry.name;
    const href = entry.folder ? `${encodeURIComponent(entry.name)}/` : encodeURIComponent(entry.name);
    const time = entry.modified.toISOString();
    return (
      `<tr><td><a href="${escapeHtml(href)}">${escapeHtml(shown)}</a></td>` +
      `<td class="size">${entry.folder ? "-" : formatSize(entry.size)}</td>` +
      `<td><time datetime="${time}">${time.slice(0, 16).replace("T", " ")} UTC</time></td></tr>\n`
    );
  });
  const parent = named.length > 0 ? `<tr><td><a href="../">../</a></td><td></td><td></td></tr>\n` : "";
  const rest =
    more > 0
      ? `<p>${more} more ${more === 1 ? "entry" : "entries"} not listed: a page lists at most ${MAX_LISTED_ENTRIES}.</p>\n`
      : "";
  return (
    `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>Index of ${title}</title>\n` +
    "<style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:.15em 1.5em .15em 0;text-align:left}" +
    "td.size{text-align:right}</style>\n</head>\n<body>\n" +
    `<h1>Index of ${title}</h1>\n<table>\n<thead><tr><th>Name</th><th>Size</th><th>Modified</th></tr></thead>\n<tbody>\n` +
    `${parent}${rows.join("")}</tbody>\n</table>\n${rest}</body>\n</html>\n`
  );
}

/** The row of `path`, or undefined when it would not be served (or is gone already). */
async function describe(path: string, name: string, inside: string, dotfiles: boolean): Promise<Entry | undefined> {
  try {
    const info = await stat(path);
    const real = await realpath(path);
    if (!`${real}${sep}`.startsWith(inside)) return undefined;
    if (
      !dotfiles &&
      real
        .slice(inside.length)
        .split(sep)
        .some((part) => part.startsWith("."))
    )
      return undefined;
    if (!info.isDirectory() && !info.isFile()) return undefined;
    return { name, folder: info.isDirectory(), size: info.size, modified: info.mtime };
  } catch {
    return undefined;
  }
}

/** Bytes in the units people read (KiB = 1024 bytes, as `ls -lh` counts). */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** Text or an attribute value (always double-quoted here) made safe for HTML. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[char]!);
}
