// What answers at --relay: a Burrow relay (and of which protocol), or something else. Asked by
// `agent doctor` step by step, and by the agent when its first connection is answered by
// something that is not a relay, so that a wrong --relay stops at once with the fix.
import { existsSync } from "node:fs";
import { INFO_PATH, PROTOCOL_VERSION } from "@burrow/protocol";
import { describe, type NetConfig, NetworkError } from "./net/dial.ts";
import { HttpConnection } from "./net/http.ts";

/** One step's result, as doctor prints it. */
export type Outcome = { ok: true; detail: string } | { ok: false; detail: string; hint: string } | { ok: "skip"; detail: string };

/**
 * A failed answer that says for certain that no Burrow relay is at the URL (a web page, a
 * redirect, a 404 of another server), as opposed to one retrying may fix (a 5xx, a proxy's
 * 403 or 407, no answer at all).
 */
export type InfoOutcome = Outcome & {
  notRelay?: boolean;
  /** The relay says it carries TCP tunnels (RelayInfo.tcp); false for one from before them. */
  tcp?: boolean;
};

const CHECK_RELAY =
  "check --relay: it is the URL `npm run deploy` printed, like https://burrow.<account>.workers.dev (or your own domain)";

/** Asks the relay what it is (INFO_PATH): a Burrow relay, and of which protocol version. */
export async function probeInfo(relay: URL, net: NetConfig): Promise<InfoOutcome> {
  const notBurrow = (what: string, notRelay: boolean, hint = CHECK_RELAY): InfoOutcome => ({
    ok: false,
    detail: `not a Burrow relay: ${relay.origin}${INFO_PATH} answered ${what}`,
    hint,
    notRelay,
  });
  let connection: HttpConnection | undefined;
  try {
    connection = await HttpConnection.open(relay, net);
    const answer = await connection.request("GET", INFO_PATH, { timeoutMs: net.timeoutMs, maxBody: 64 * 1024 });
    const type = answer.headers.get("content-type") ?? "no content type";
    if (answer.status === 404 && answer.headers.get("x-burrow-error") === "not-found") {
      return {
        ok: false,
        detail: `a Burrow relay from before ${INFO_PATH} (it answered 404 not-found), older than this agent`,
        hint: "redeploy the relay with this version of Burrow (npm run deploy), or use the agent of the relay's version",
      };
    }
    if (answer.status >= 300 && answer.status < 400) {
      const location = answer.headers.get("location") ?? "nowhere";
      const to = URL.canParse(location, relay) ? new URL(location, relay) : undefined;
      const hint =
        to && to.hostname === relay.hostname && to.protocol !== relay.protocol ? `use --relay ${to.origin}` : CHECK_RELAY;
      return notBurrow(`${answer.status} ${answer.statusText}, a redirect to ${location}`, true, hint);
    }
    if (answer.status !== 200) {
      // Another server's "no such page"; a 5xx or a proxy's refusal may pass.
      const certain = [404, 405, 410].includes(answer.status);
      return notBurrow(`${answer.status} ${answer.statusText} (${type})`, certain);
    }
    let info: { burrow?: unknown; protocol?: unknown; tcp?: unknown };
    try {
      info = JSON.parse(answer.body.toString("utf8"));
    } catch {
      return notBurrow(`200 with ${type}, not JSON`, true);
    }
    if (info?.burrow !== true || typeof info.protocol !== "number") return notBurrow("JSON that is not a Burrow relay's", true);
    if (info.protocol < PROTOCOL_VERSION) {
      return {
        ok: false,
        detail: `protocol mismatch: the relay speaks protocol ${info.protocol} and this agent ${PROTOCOL_VERSION}`,
        hint: "redeploy the relay with this version of Burrow (npm run deploy), or use an older agent",
      };
    }
    if (info.protocol > PROTOCOL_VERSION) {
      return {
        ok: false,
        detail: `protocol mismatch: the relay speaks protocol ${info.protocol} and this agent ${PROTOCOL_VERSION}`,
        hint: "upgrade the agent: npm install burrow-agent@latest, or the newest executable",
      };
    }
    const tcp = info.tcp === true;
    return {
      ok: true,
      detail: `a Burrow relay speaking protocol ${info.protocol}, as this agent does, ${tcp ? "with TCP tunnels" : "from before TCP tunnels (agent --tcp and agent connect need a newer one)"}`,
      tcp,
    };
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("relay", describe(error), "", false);
    return { ok: false, detail: `no answer at ${INFO_PATH}: ${failure.message}`, hint: failure.hint };
  } finally {
    connection?.close();
  }
}

/**
 * The --relay a user meant when they left out the scheme (`localhost:8787`,
 * `tunnel.example.com`): http:// for this machine, where `npm run relay` listens, else https://.
 * Undefined when `text` has a scheme or is no host at all.
 */
export function withScheme(text: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return undefined;
  const guess = `http://${text}`;
  if (!URL.canParse(guess)) return undefined;
  const { hostname } = new URL(guess);
  if (!hostname.includes(".") && hostname !== "localhost" && !hostname.startsWith("[")) return undefined;
  const local = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\]|0\.0\.0\.0)$/.test(hostname) || hostname.endsWith(".localhost");
  return `${local ? "http" : "https"}://${text}`;
}

/**
 * Whether this agent runs from a clone of the Burrow repository (its sources, with the
 * repository's `scripts/relay.js` beside them), where `npm run relay` starts a relay. The
 * package's bundle (node_modules/burrow-agent/dist/) and the executable have no such file.
 */
export function runsFromClone(): boolean {
  try {
    return existsSync(new URL("../../scripts/relay.js", import.meta.url));
  } catch {
    return false;
  }
}
