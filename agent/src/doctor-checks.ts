// The steps of `agent doctor` past the way to the relay: does the relay accept this agent (its
// token), and does the local server answer. Both are what the agent itself will need.
import http from "node:http";
import https from "node:https";
import { CONNECT_PATH, decodeMessage, encodeFrame, FrameType, MAX_POLL_WAIT_MS, PROTOCOL_VERSION } from "@burrow/protocol";
import { randomClaim, randomName } from "./names.ts";
import { describe, dial, type NetConfig, NetworkError } from "./net/dial.ts";
import { HttpsLink } from "./net/https-link.ts";
import { openWebSocket, type RelayLink } from "./net/websocket.ts";
import type { Origin } from "./origin.ts";
import type { Outcome } from "./relay-info.ts";

/** How long the local server has to answer doctor's GET /. */
const ORIGIN_ANSWER_MS = 5_000;

/**
 * Says hello as the agent will, with its token, for a throwaway name (`doctor-` and a random
 * one), so that no live tunnel's name is touched: the relay answers Ready, or Refused with a
 * code ("unauthorized" for a wrong or missing token). The link is closed cleanly at once,
 * which frees the name on an open relay.
 */
export async function probeToken(
  relay: URL,
  net: NetConfig,
  token: string,
  transport: "websocket" | "https",
  version: string,
): Promise<Outcome & { refused?: boolean }> {
  const name = `doctor-${randomName()}`.slice(0, 63).replace(/-+$/, "");
  let link: RelayLink | undefined;
  try {
    if (transport === "https") {
      link = await HttpsLink.open(relay, name, net, MAX_POLL_WAIT_MS, undefined, token);
    } else {
      const url = new URL(CONNECT_PATH, relay);
      url.protocol = relay.protocol === "https:" ? "wss:" : "ws:";
      url.searchParams.set("name", name);
      link = await openWebSocket(await dial(url, net), url, net.timeoutMs);
    }
    const opened = link;
    const answer = await new Promise<{ ready?: { open: boolean }; refused?: { code: string; message: string } }>(
      (resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no answer to the hello within ${net.timeoutMs / 1000}s`)),
          net.timeoutMs,
        );
        opened.onmessage = (data) => {
          if (typeof data === "string") return;
          for (const frame of decodeMessage(data, { frames: 0 })) {
            if (frame.type === FrameType.Ready || frame.type === FrameType.Refused) clearTimeout(timer);
            if (frame.type === FrameType.Ready) return resolve({ ready: { open: frame.open } });
            if (frame.type === FrameType.Refused) return resolve({ refused: { code: frame.code, message: frame.message } });
          }
        };
        opened.onclose = (code, reason) => {
          clearTimeout(timer);
          reject(new Error(`the relay closed the connection (${code} ${reason})`));
        };
        opened.send(
          encodeFrame({
            type: FrameType.Hello,
            version: PROTOCOL_VERSION,
            agent: version,
            name,
            token,
            claim: randomClaim(),
            rules: { basicAuth: [], allowIp: [], webhooks: [], connectKeys: [] },
            resume: null,
            tcp: false,
          }),
        );
      },
    );
    if (answer.ready) {
      if (answer.ready.open) {
        return {
          ok: true,
          detail: `none needed: the relay is open (anyone who can reach it may open tunnels)${token ? "; the token given is not used" : ""}`,
        };
      }
      return { ok: true, detail: `the relay accepts the token (a hello for the throwaway tunnel ${name} was answered Ready)` };
    }
    const { code, message } = answer.refused!;
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
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("relay", describe(error), "", false);
    return { ok: false, detail: `the hello got no answer: ${failure.message}`, hint: failure.hint };
  } finally {
    link?.close(1000, "doctor done");
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
