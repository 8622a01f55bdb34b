// The documentation as the tests read it: README.md, the package's README and docs/*.md, and
// the fenced code blocks in them.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../_relay.ts";

/** Every page, as a path relative to the repository's root. */
export function pages(root = ROOT): string[] {
  const docs = readdirSync(join(root, "docs"))
    .filter((name) => name.endsWith(".md"))
    .sort()
    .map((name) => `docs/${name}`);
  return ["README.md", "agent/README.md", ...docs];
}

export interface CodeBlock {
  page: string;
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  text: string;
}

/** The fenced code blocks of a page, in order. */
export function codeBlocks(page: string, root = ROOT): CodeBlock[] {
  const lines = readFileSync(join(root, page), "utf8").split("\n");
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!.slice(indent));
    blocks.push({ page, line: i + 1, lang: open[2]!, text: body.join("\n") });
    i = j;
  }
  return blocks;
}
