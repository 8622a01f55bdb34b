// The command shapes people bring from other tunnels, read as the flags they mean:
// `agent 8000` (localtunnel's and cloudflared's habit of one port), `agent http 8000` and
// `agent http https://localhost:8443` (ngrok's). Anything else that is not a flag gets the
// exact command to type. The words may come before or after the flags, as with ngrok.
import { AgentError } from "./errors.ts";
import { closest } from "./suggest.ts";

/** The subcommands; anything else before the flags is a shape or a mistake. */
export const COMMANDS = ["doctor", "login", "logout", "connect"] as const;

const PORT = /^\d{1,5}$/;
const HOST_PORT = /^(localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:]+\]|[a-z0-9.-]+):(\d{1,5})$/i;

/**
 * The flags that the words among the arguments (those not flags or their values) stand for.
 * @throws {AgentError} "usage" for words the agent cannot read, with the command to type.
 */
export function readShapes(words: string[]): string[] {
  const [first, ...rest] = words;
  if (first === undefined) return [];
  let flags: string[];
  let extra: string[];
  if (first === "http" || first === "https") {
    const [target, ...after] = rest;
    if (target === undefined) {
      throw new AgentError(
        "usage",
        `\`agent ${first}\` needs the local server`,
        "for example: agent http 8000, or agent --port 8000",
      );
    }
    flags = asFlags(target, `agent ${first} ${target}`);
    extra = after;
  } else if (PORT.test(first) || HOST_PORT.test(first) || /^https?:\/\//i.test(first)) {
    flags = asFlags(first, `agent ${first}`);
    extra = rest;
  } else if ((COMMANDS as readonly string[]).includes(first)) {
    throw new AgentError("usage", `${first} must come first`, `agent ${[...words, "[flags]"].join(" ")}`);
  } else if (first === "tcp") {
    // ngrok's `ngrok tcp 22`.
    const [target, ...after] = rest;
    if (target === undefined || !(PORT.test(target) || HOST_PORT.test(target))) {
      throw new AgentError("usage", "`agent tcp` needs a port or HOST:PORT", "for example: agent tcp 22, or agent --tcp 22");
    }
    flags = ["--tcp", target];
    extra = after;
  } else if (["tls", "udp"].includes(first)) {
    throw new AgentError(
      "usage",
      `Burrow tunnels HTTP (and WebSockets) and TCP, not ${first}`,
      "for an HTTP server: agent --port 8000; for TCP: agent --tcp 22",
    );
  } else {
    const near = closest(first, [...COMMANDS, "http"]);
    throw new AgentError(
      "usage",
      `unknown command ${JSON.stringify(first)}${near ? `; did you mean ${near}?` : ""}`,
      `to expose a local server: agent --port 8000; the commands are ${COMMANDS.join(", ")} (see agent --help)`,
    );
  }
  if (extra.length > 0) {
    throw new AgentError(
      "usage",
      `unexpected argument ${JSON.stringify(extra[0])} after \`${words.slice(0, words.length - extra.length).join(" ")}\``,
      `one tunnel per command: agent ${flags.join(" ")}; several go in burrow.toml's [[tunnel]] tables`,
    );
  }
  return flags;
}

/** A port, HOST:PORT or URL as the flag that says it. */
function asFlags(target: string, typed: string): string[] {
  if (PORT.test(target)) return ["--port", target];
  const hostPort = HOST_PORT.exec(target);
  if (hostPort) return ["--origin", `http://${target}`];
  if (/^https?:\/\//i.test(target)) return ["--origin", target];
  throw new AgentError(
    "usage",
    `\`${typed}\`: ${JSON.stringify(target)} is neither a port nor a URL`,
    "for example: agent --port 8000, or agent --origin http://localhost:8000",
  );
}
