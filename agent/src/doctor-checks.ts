// The steps of `agent doctor` past the way to the relay: does the relay accept this agent (its
// token), and does the local server (or --tcp's target) answer; for `agent doctor connect`,
// does the relay let this visitor's Connect in. Each is what the agent itself will need.
import http from "node:http";
import https from "node:https";
import { connect as connectTcp } from "node:net";
import {
  CONNECT_PATH,
  CONNECTOR_ROLE,
  decodeMessage,
  encodeFrame,
  type Frame,
  FrameType,
  MAX_POLL_WAIT_MS,
  PROTOCOL_VERSION,
  type ReadyFrame,
  type RefusedFrame,
} from "@burrow/protocol";
import { randomClaim, randomName } from "./names.ts";
import { describe, dial, type NetConfig, NetworkError } from "./net/dial.ts";
import { HttpsLink } from "./net/https-link.ts";
import { openWebSocket, type RelayLink } from "./net/websocket.ts";
import type { Origin } from "./origin.ts";
import type { Outcome } from "./relay-info.ts";

/** How long the local server has to answer doctor's GET /. */
const ORIGIN_ANSWER_MS = 5_000;

/** What the relay answered a first frame (a Hello or a Connect). */
type FirstAnswer = { ready: ReadyFrame; refused?: undefined } | { ready?: undefined; refused: RefusedFrame };

/**
 * Opens a link for tunnel `name` on `transport` (a visitor's connect with `role`), sends
 * `first` and resolves with the relay's Ready or Refused; the link is closed cleanly at once.
 * @throws {NetworkError} or Error when the link cannot be opened or nothing answers.
 */
async function firstAnswer(
  relay: URL,
  net: NetConfig,
  transport: "websocket" | "https",
  name: string,
  first: Frame,
  { token = "", role }: { token?: string; role?: string } = {},
): Promise<FirstAnswer> {
  let link: RelayLink | undefined;
  try {
    if (transport === "https") {
      link = await HttpsLink.open(relay, name, net, MAX_POLL_WAIT_MS, undefined, token, 0, role);
    } else {
      const url = new URL(CONNECT_PATH, relay);
      url.protocol = relay.protocol === "https:" ? "wss:" : "ws:";
      url.searchParams.set("name", name);
      if (role) url.searchParams.set("role", role);
      link = await openWebSocket(await dial(url, net), url, net.timeoutMs);
    }
    const opened = link;
    return await new Promise<FirstAnswer>((resolve, reject) => {
      const what = first.type === FrameType.Connect ? "Connect" : "hello";
      const timer = setTimeout(
        () => reject(new Error(`no answer to the ${what} within ${net.timeoutMs / 1000}s`)),
        net.timeoutMs,
      );
      opened.onmessage = (data) => {
        if (typeof data === "string") return;
        for (const frame of decodeMessage(data, { frames: 0 })) {
          if (frame.type === FrameType.Ready || frame.type === FrameType.Refused) clearTimeout(timer);
          if (frame.type === FrameType.Ready) return resolve({ ready: frame });
          if (frame.type === FrameType.Refused) return resolve({ refused: frame });
        }
      };
      opened.onclose = (code, reason) => {
        clearTimeout(timer);
        reject(new Error(`the relay closed the connection (${code} ${reason})`));
      };
      opened.send(encodeFrame(first));
    });
  } finally {
    link?.close(1000, "doctor done");
  }
}

/**
 * Says hello as the agent will, with its token, for a throwaway name (`doctor-` and a random
 * one), so that no live tunnel's name is touched: the relay answers Ready, or Refused with a
 * code ("unauthorized" for a wrong or missing token). The link is closed cleanly at once,
 * which frees the name on an open relay. `tcp`: the hello of `agent --tcp`, whose Ready must
 * say the relay carries TCP tunnels.
 */
export async function probeToken(
  relay: URL,
  net: NetConfig,
  token: string,
  transport: "websocket" | "https",
  version: string,
  tcp = false,
): Promise<Outcome & { refused?: boolean }> {
  const name = `doctor-${randomName()}`.slice(0, 63).replace(/-+$/, "");
  let answer: FirstAnswer;
  try {
    answer = await firstAnswer(
      relay,
      net,
      transport,
      name,
      {
        type: FrameType.Hello,
        version: PROTOCOL_VERSION,
        agent: version,
        name,
        token,
        claim: randomClaim(),
        rules: { basicAuth: [], allowIp: [], webhooks: [], connectKeys: [] },
        resume: null,
        tcp,
      },
      { token },
    );
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("relay", describe(error), "", false);
    return { ok: false, detail: `the hello got no answer: ${failure.message}`, hint: failure.hint };
  }
  if (answer.ready) {
    if (tcp && !answer.ready.tcp) {
      return {
        ok: false,
        refused: true,
        detail: `the relay took a TCP tunnel's hello for an HTTP tunnel's: ${OLDER_RELAY}`,
        hint: UPGRADE_RELAY,
      };
    }
    if (answer.ready.open) {
      return {
        ok: true,
        detail: `none needed: the relay is open (anyone who can reach it may open tunnels)${token ? "; the token given is not used" : ""}`,
      };
    }
    return { ok: true, detail: `the relay accepts the token (a hello for the throwaway tunnel ${name} was answered Ready)` };
  }
  const { code, message } = answer.refused;
  if (code === "too-many-tunnels") return { ok: true, detail: `the relay accepts the token, and says: ${message}` };
  return {
    ok: false,
    refused: true,
    detail: `the relay refused the agent's hello (${code}): ${message}`,
    hint:
      code === "unauthorized"
        ? "pass the relay's token with --token-file FILE, --token or BURROW_TOKEN (its owner set it in BURROW_TOKENS)"
        : "",
  };
}

const OLDER_RELAY = "it is older than this agent and carries no TCP tunnels";
const UPGRADE_RELAY = "upgrade the relay (redeploy it, or update the package that runs `agent relay`)";

/** What to do about each refusal of a visitor's Connect. */
const CONNECT_HINTS: Record<string, (name: string) => string> = {
  "agent-offline": (name) => `the tunnel's owner starts its agent (agent --tcp PORT --name ${name}) on the machine it serves`,
  "not-tcp": () => "open the tunnel's URL in a browser: agent connect is for tunnels started with --tcp",
  unauthorized: () => "ask the tunnel's owner for its connect key; pass it with --key-file FILE or BURROW_CONNECT_KEY",
  forbidden: () => "the tunnel's owner admits listed addresses only (--allow-ip): ask them to add yours",
  "version-mismatch": () => "use the same Burrow version as the relay",
};

/**
 * `agent doctor connect NAME`: says Connect with the key as `agent connect` will, and closes
 * cleanly on the relay's answer without opening a connection, so the tunnel's agent sees
 * nothing. Ready means the tunnel exists, is a TCP tunnel, its agent is there and the key (and
 * this address) are let in; a Refused says which of those fails.
 */
export async function probeConnect(
  relay: URL,
  net: NetConfig,
  name: string,
  key: string,
  transport: "websocket" | "https",
  version: string,
): Promise<Outcome & { refused?: boolean }> {
  let answer: FirstAnswer;
  try {
    answer = await firstAnswer(
      relay,
      net,
      transport,
      name,
      { type: FrameType.Connect, version: PROTOCOL_VERSION, client: version, name, key, resume: null },
      { role: CONNECTOR_ROLE },
    );
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("relay", describe(error), "", false);
    return { ok: false, detail: `the Connect got no answer: ${failure.message}`, hint: failure.hint };
  }
  if (answer.ready?.tcp) {
    return {
      ok: true,
      detail: `tunnel ${name} is a TCP tunnel, its agent is connected, and it takes this key (a Connect was answered Ready; no connection was opened)`,
    };
  }
  // A relay from before TCP tunnels takes the Connect for an agent's hello (see CONNECTOR_ROLE).
  const refused = answer.refused;
  if (!refused || (refused.code === "bad-hello" && refused.message.includes("must be a Hello"))) {
    return { ok: false, refused: true, detail: `the relay refused the Connect: ${OLDER_RELAY}`, hint: UPGRADE_RELAY };
  }
  return {
    ok: false,
    refused: true,
    detail: `the relay refused the Connect (${refused.code}): ${refused.message}`,
    hint: CONNECT_HINTS[refused.code]?.(name) ?? "",
  };
}

/** `agent doctor --tcp`: the tunnel's target accepts a TCP connection (closed at once). */
export async function probeTarget(target: { host: string; port: number; label: string }): Promise<Outcome> {
  try {
    await new Promise<void>((resolve, reject) => {
      const socket = connectTcp({ host: target.host, port: target.port });
      socket.setTimeout(ORIGIN_ANSWER_MS, () => socket.destroy(Object.assign(new Error("no answer"), { code: "ETIMEDOUT" })));
      socket.once("connect", () => {
        socket.destroy();
        resolve();
      });
      socket.once("error", reject);
    });
    return { ok: true, detail: `${target.label} accepts connections` };
  } catch (error) {
    return {
      ok: false,
      detail: `nothing accepts connections at ${target.label} (${describe(error)})`,
      hint: "start the service first (visitors' connections go to it), or check --tcp",
    };
  }
}

/** GET / on the local server the tunnel will forward to: it listens, and answers HTTP. */
export async function probeOrigin(origin: Origin): Promise<Outcome> {
  const url = new URL("/", origin.url);
  const where = origin.label;
  try {
    const status = await new Promise<string>((resolve, reject) => {
      const get = url.protocol === "https:" ? https.get : http.get;
      const request = get(url, { ...(url.protocol === "https:" ? origin.tls : {}), timeout: ORIGIN_ANSWER_MS }, (response) => {
        response.resume();
        resolve(`${response.statusCode} ${response.statusMessage ?? ""}`.trim());
      });
      request.once("timeout", () => request.destroy(Object.assign(new Error("no answer"), { code: "ETIMEDOUT" })));
      request.once("error", reject);
    });
    return { ok: true, detail: `${where} answers GET / with ${status}` };
  } catch (error) {
    const code = (error as { code?: string }).code ?? "";
    const nothing = code === "ECONNREFUSED" || code === "ECONNRESET";
    return {
      ok: false,
      detail: nothing
        ? `nothing is listening on ${where} (${describe(error)})`
        : `${where} does not answer HTTP: ${describe(error)}`,
      hint: nothing
        ? "start your server first (the tunnel forwards visitors to it), or check --port, --host or --origin"
        : "check that it is an HTTP server (an https:// one needs --origin https://HOST:PORT)",
    };
  }
}
