#!/usr/bin/env node
// `npm run check` runs this: every relative link between README.md, agent/README.md and
// docs/*.md must reach a file that exists, and every #anchor a heading of that page, as GitHub
// renders it. Usage: node scripts/check-links.js [ROOT] (default: this clone). Exits 1 and
// names each dead link with its page and line.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The pages whose links are checked, relative to `root`. */
export function pages(root) {
  const docs = existsSync(join(root, "docs"))
    ? readdirSync(join(root, "docs"))
        .filter((name) => name.endsWith(".md"))
        .sort()
        .map((name) => `docs/${name}`)
    : [];
  return ["README.md", "agent/README.md", ...docs].filter((page) => existsSync(join(root, page)));
}

/** The lines of a page outside fenced code blocks, with their 1-based numbers. */
function prose(text) {
  const out = [];
  let fence = "";
  text.split("\n").forEach((line, i) => {
    const open = /^\s*(```+|~~~+)/.exec(line);
    if (open && (!fence || open[1].startsWith(fence))) {
      fence = fence ? "" : open[1];
      return;
    }
    if (!fence) out.push({ line: i + 1, text: line });
  });
  return out;
}

/**
 * GitHub's anchor for a heading (github-slugger): the rendered text in lower case, without
 * anything but letters, digits, `_`, `-` and spaces, each space a hyphen; a repeated anchor gets
 * -1, -2... in order.
 */
export function anchors(text) {
  const seen = new Map();
  const out = new Set();
  for (const { text: line } of prose(text)) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    const explicit = [...line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)].map((m) => m[1]);
    for (const id of explicit) out.add(id);
    if (!heading) continue;
    const rendered = heading[1]
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // a link's text, not its target
      .replace(/<[^>]+>/g, "") // inline HTML tags
      .replace(/[`*~]/g, "")
      .replace(/(^|\s)_+|_+(\s|$)/g, "$1$2"); // emphasis underscores, not inner ones
    const base = rendered
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, "")
      .replace(/ /g, "-");
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    out.add(count ? `${base}-${count}` : base);
  }
  return out;
}

/** Dead links of the pages under `root`: `{ page, line, link, reason }`. */
export function deadLinks(root) {
  const problems = [];
  const cache = new Map();
  const anchorsOf = (file) => {
    if (!cache.has(file)) cache.set(file, anchors(readFileSync(file, "utf8")));
    return cache.get(file);
  };
  for (const page of pages(root)) {
    const file = join(root, page);
    for (const { line, text } of prose(readFileSync(file, "utf8"))) {
      // Inline links and images, outside code spans: [text](target "title").
      const bare = text.replace(/`[^`]*`/g, "");
      for (const match of bare.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const link = match[1];
        if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:: not ours to check
        const [path, anchor] = link.split("#", 2);
        const target = path ? resolve(dirname(file), decodeURIComponent(path)) : file;
        if (!target.startsWith(resolve(root))) {
          problems.push({ page, line, link, reason: "leaves the repository" });
        } else if (!existsSync(target)) {
          problems.push({ page, line, link, reason: `no file ${relative(root, target)}` });
        } else if (anchor !== undefined && statSync(target).isFile() && target.endsWith(".md")) {
          if (!anchorsOf(target).has(anchor)) {
            problems.push({ page, line, link, reason: `no heading #${anchor} in ${relative(root, target)}` });
          }
        }
      }
    }
  }
  return problems;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), ".."));
  const problems = deadLinks(root);
  for (const { page, line, link, reason } of problems) console.error(`${page}:${line}: dead link ${link}: ${reason}`);
  if (problems.length) {
    console.error(`error: ${problems.length} dead link${problems.length === 1 ? "" : "s"} in the docs`);
    console.error(
      "  hint: fix the path, or the #anchor: GitHub's is the heading in lower case, spaces as hyphens, punctuation dropped",
    );
    process.exitCode = 1;
  } else {
    console.log(`links: ${pages(root).length} pages, no dead link`);
  }
}
