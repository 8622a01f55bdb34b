// What FindProxyForURL answers, read as browsers read it: a list separated by ";" of
// "DIRECT", "PROXY host:port" (also "HTTP host:port", Firefox's synonym), and kinds this agent
// does not speak ("HTTPS host:port", an HTTPS proxy; "SOCKS", "SOCKS4", "SOCKS5"), tried in order.

/** A PAC file that cannot give an answer: it does not compile, throws, loops, or answers junk. */
export class PacError extends Error {
  override readonly name = "PacError";
}

/** One way out that the agent can take. */
export type PacChoice = { kind: "direct" } | { kind: "proxy"; host: string; port: number };

export interface PacAnswer {
  choices: PacChoice[];
  /** Items the agent cannot use, each said in words ("SOCKS5 s:1080: SOCKS proxies are not supported"). */
  skipped: string[];
}

/**
 * Reads an answer such as "PROXY a:3128; PROXY b:3128; DIRECT".
 * @throws {Error} when no item is usable: the message says what the PAC answered and why.
 */
export function parsePacAnswer(answer: string): PacAnswer {
  const choices: PacChoice[] = [];
  const skipped: string[] = [];
  const items = answer
    .split(";")
    .map((item) => item.trim())
    .filter(Boolean);
  for (const item of items) {
    const [kind = "", address = "", ...rest] = item.split(/\s+/);
    const type = kind.toUpperCase();
    if (type === "DIRECT" && !address) {
      choices.push({ kind: "direct" });
      continue;
    }
    if (type === "SOCKS" || type === "SOCKS4" || type === "SOCKS5") {
      skipped.push(`${item}: SOCKS proxies are not supported (the agent speaks to HTTP proxies, with CONNECT)`);
      continue;
    }
    if (type === "HTTPS") {
      skipped.push(`${item}: HTTPS proxies (TLS to the proxy itself) are not supported`);
      continue;
    }
    const parsed = (type === "PROXY" || type === "HTTP") && rest.length === 0 ? hostPort(address) : undefined;
    if (parsed) choices.push({ kind: "proxy", ...parsed });
    else skipped.push(`${JSON.stringify(item)}: not a PAC answer (expected DIRECT or PROXY host:port)`);
  }
  if (choices.length === 0) {
    const why = skipped.length ? `: ${skipped.join("; ")}` : "";
    throw new Error(`the PAC file answered ${JSON.stringify(answer.slice(0, 200))}, which names no usable way out${why}`);
  }
  return { choices, skipped };
}

/** "host:port", "[v6]:port" or a bare host (port 80, as browsers assume). */
function hostPort(text: string): { host: string; port: number } | undefined {
  const match = /^(\[[0-9a-f:.]+\]|[a-z0-9.\-_]+)(?::(\d{1,5}))?$/i.exec(text);
  if (!match) return undefined;
  const port = match[2] === undefined ? 80 : Number(match[2]);
  if (!(port >= 1 && port <= 65535)) return undefined;
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
}

/** A choice in words, as messages name it: "a:3128" or "DIRECT". */
export function describeChoice(choice: PacChoice): string {
  if (choice.kind === "direct") return "DIRECT";
  return `${choice.host.includes(":") ? `[${choice.host}]` : choice.host}:${choice.port}`;
}
