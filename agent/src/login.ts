// `agent login --relay URL` and `agent logout`: the relay and its token saved once in the
// user's config.toml (user-config.ts), as `ngrok config add-authtoken` saves ngrok's.
import process from "node:process";
import { SESSION_HEADER, SESSION_PATH } from "@burrow/protocol";
import { AgentError } from "./errors.ts";
import { randomName } from "./names.ts";
import type { NetConfig } from "./net/dial.ts";
import { HttpConnection } from "./net/http.ts";
import { probeInfo } from "./relay-info.ts";
import { removeUserConfig, saveUserConfig, userConfigFile } from "./user-config.ts";

type Env = (name: string) => string | undefined;

/**
 * Checks that `relay` is a Burrow relay (GET /_burrow/info, as doctor does), asks whether it
 * requires a token, reads the token (never from a flag: other users see flags in `ps`),
 * checks it, and saves both. Returns the exit status.
 */
export async function login(relay: URL, net: NetConfig, env: Env, print: (line: string) => void): Promise<number> {
  const file = userConfigFile(env);
  if (!file) {
    throw new AgentError(
      "runtime",
      "there is nowhere to save the settings: neither XDG_CONFIG_HOME nor HOME is set",
      "set HOME (or XDG_CONFIG_HOME) and run it again",
    );
  }
  const info = await probeInfo(relay, net);
  if (info.ok !== true) throw new AgentError("network", info.detail, info.ok === false ? info.hint : "");
  // The relay's info does not say whether it requires tokens; opening an HTTPS-transport
  // session does (401 without a valid token), and closing it before any hello opens no tunnel.
  const open = await opensSession(relay, net, "");
  const terminal = process.stdin.isTTY === true;
  let token = "";
  if (!open || !terminal) {
    token = await readSecret(open ? "token (empty: none, the relay is open): " : "token: ", terminal);
  }
  if (open) {
    print(
      `${relay.origin} is a Burrow relay, and open: it needs no token${token ? " (the token is saved for when it requires one)" : ""}`,
    );
  } else if (!token) {
    throw new AgentError(
      "usage",
      `${relay.origin} requires a token, and none was given`,
      "type the token at the prompt, or pipe it in: agent login --relay URL < token.txt",
    );
  } else if (!(await opensSession(relay, net, token))) {
    throw new AgentError(
      "refused",
      `${relay.origin} refused this token (401 unauthorized); nothing was saved`,
      "check the token with the relay's owner: it is one of BURROW_TOKENS's (the part after the label and the colon)",
    );
  } else {
    print(`${relay.origin} is a Burrow relay, and it accepted the token`);
  }
  saveUserConfig(file, relay.href.replace(/\/$/, ""), token);
  print(`saved to ${file}; now \`agent --port 8000\` needs no other flag (\`agent logout\` removes it)`);
  return 0;
}

/** Removes the saved settings. */
export function logout(env: Env, print: (line: string) => void): number {
  const file = userConfigFile(env);
  if (!file || !removeUserConfig(file)) {
    print(`not logged in: there is no ${file ?? "config.toml"}`);
    return 0;
  }
  print(`removed ${file}: the relay and token saved by \`agent login\` are forgotten`);
  return 0;
}

/**
 * Whether the relay opens an HTTPS-transport session with this token ("" for none), closing
 * it at once. 201: yes; 401 unauthorized: no.
 */
async function opensSession(relay: URL, net: NetConfig, token: string): Promise<boolean> {
  const path = `${SESSION_PATH}?name=${randomName()}`;
  const connection = await HttpConnection.open(relay, net);
  try {
    const opened = await connection.request("POST", path, {
      timeoutMs: net.timeoutMs,
      maxBody: 64 * 1024,
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    if (opened.status === 401) return false;
    if (opened.status !== 201) {
      throw new AgentError(
        "network",
        `opening a session to check the token was answered ${opened.status} ${opened.statusText}`,
        "run `agent doctor --relay URL` to see where the way to the relay fails",
      );
    }
    const { session } = JSON.parse(opened.body.toString("utf8")) as { session: string };
    await connection.request("DELETE", `${path}&code=1000&reason=login`, {
      timeoutMs: net.timeoutMs,
      maxBody: 64 * 1024,
      headers: { [SESSION_HEADER]: session },
    });
    return true;
  } finally {
    connection.close();
  }
}

/** Characters the token's line may hold: tokens are tens of characters; a file piped in by mistake stops here. */
const MAX_TOKEN_LINE = 4096;

/**
 * One line from stdin: typed at a prompt that does not echo it on a terminal, else the first
 * line piped in (an empty stdin is an empty line).
 */
async function readSecret(prompt: string, terminal: boolean): Promise<string> {
  const stdin = process.stdin;
  // Echo off before the prompt shows: what is typed after it is never drawn.
  if (terminal) stdin.setRawMode(true);
  if (terminal) process.stderr.write(prompt);
  let text = "";
  try {
    return await new Promise<string>((resolve, reject) => {
      const done = (line: string) => {
        stdin.off("data", onData);
        stdin.off("end", onEnd);
        stdin.pause();
        resolve(line.trim());
      };
      const onEnd = () => done(text.split(/\r?\n/, 1)[0] ?? "");
      const onData = (chunk: Buffer) => {
        for (const char of chunk.toString("utf8")) {
          if (terminal && char === "\u0003") {
            stdin.off("data", onData);
            reject(new AgentError("usage", "login cancelled", ""));
            return;
          }
          if (char === "\r" || char === "\n") return done(text);
          if (terminal && (char === "\u007f" || char === "\b")) text = text.slice(0, -1);
          else text += char;
          if (text.length > MAX_TOKEN_LINE) {
            stdin.off("data", onData);
            stdin.off("end", onEnd);
            stdin.pause();
            reject(
              new AgentError(
                "usage",
                `the token's line is over ${MAX_TOKEN_LINE} characters, longer than any token`,
                "give the token alone on its first line: agent login --relay URL < token.txt",
              ),
            );
            return;
          }
        }
      };
      stdin.on("data", onData);
      stdin.on("end", onEnd);
      stdin.resume();
    });
  } finally {
    if (terminal) {
      stdin.setRawMode(false);
      process.stderr.write("\n");
    }
  }
}
