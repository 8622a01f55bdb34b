import { CONNECT_PATH, CONNECTOR_ROLE, HEARTBEAT, SESSION_HEADER, SESSION_PATH } from "@burrow/protocol";
import { probeConnect, probeOrigin, probeTarget, probeToken } from "./doctor-checks.ts";
import { type DialReport, describe, dial, type NetConfig, NetworkError, type Step } from "./net/dial.ts";
import { HttpConnection } from "./net/http.ts";
import type { PacDecision, PacSettings } from "./net/pac/pac.ts";
import { openWebSocket } from "./net/websocket.ts";
import type { Origin } from "./origin.ts";
import { type Outcome, probeInfo } from "./relay-info.ts";
import type { TcpTarget } from "./tcp/forward.ts";

/**
 * `agent doctor`: walks the path to the relay one step at a time (proxy, CONNECT, TLS,
 * Burrow relay of this protocol (and whether it carries TCP tunnels), WebSocket, HTTPS
 * transport), prints what works and what to do about what does not, and says which transport
 * the agent would use; then whether the relay accepts the agent (a hello with its token, a TCP
 * tunnel's with --tcp) and, given --port, --origin, --dir or --tcp, whether the local server
 * or target answers. `agent doctor connect NAME` (`connect`: the visitor's key) walks the same
 * path as `agent connect` and then, in a "key" step in place of "token", says Connect: whether
 * tunnel NAME is a TCP tunnel whose agent is there and which takes the key, opening no connection.
 * Exit status 0 when all of that works; 5 when no transport reaches the relay, 3 when the relay
 * refuses the agent (its token) or the visitor (the Connect), 1 when only the local server fails.
 */
export async function doctor(
  relay: URL,
  name: string,
  net: NetConfig,
  print: (line: string) => void,
  agent: { token: string; version: string; origin?: Origin; tcp?: TcpTarget; connect?: { key: string } },
): Promise<number> {
  const { token, connect } = agent;
  // A visitor's connect opens its links as one (no relay token: the key is in its Connect).
  const role = connect ? CONNECTOR_ROLE : undefined;
  const show = (step: string, outcome: Outcome) => {
    const mark = outcome.ok === true ? "ok  " : outcome.ok === false ? "FAIL" : "--  ";
    print(`${mark} ${step.padEnd(10)} ${outcome.detail}`);
    if (outcome.ok === false && outcome.hint) print(`     ${"".padEnd(10)} hint: ${outcome.hint}`);
  };
  const secure = relay.protocol === "https:";
  const authority = `${relay.hostname}:${relay.port || (secure ? 443 : 80)}`;
  print(`relay: ${relay.origin}`);

  const report: DialReport = {};
  let failedAt: Step | undefined;
  let failure: NetworkError | undefined;
  try {
    (await dial(relay, net, report)).destroy();
  } catch (error) {
    failure = error instanceof NetworkError ? error : new NetworkError("relay", describe(error), "", false);
    failedAt = failure.step;
  }
  const outcomeOf = (step: Step, detail: string): Outcome =>
    failedAt === step ? { ok: false, detail: failure!.message, hint: failure!.hint } : { ok: true, detail };

  if (net.pac) showPac(net.pac.settings, report.pac, report.pac ? undefined : failure, show, print);
  const proxy = net.pac ? report.proxy : net.proxy;
  if (net.pac && !report.pac) {
    // The PAC itself failed: nothing was dialed.
  } else if (proxy) {
    show("proxy", outcomeOf("proxy", `${proxy.display} (from ${proxy.source}) accepts connections`));
    const auth = report.proxyAuth;
    const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
    const how = auth
      ? ` (${auth.scheme}${auth.user ? ` as "${auth.user}"` : ""}: ${plural(auth.attempts, "attempt")}, ${plural(auth.connections, "connection")})`
      : "";
    if (failedAt !== "proxy") show("connect", outcomeOf("connect", `CONNECT ${authority}: ${report.connect ?? ""}${how}`));
  } else {
    show("proxy", {
      ok: "skip",
      detail: net.pac
        ? "none: connecting directly, as the PAC file says"
        : "none: connecting directly (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY unset, or NO_PROXY matched)",
    });
    show("tcp", outcomeOf("relay", `${authority} accepts connections`));
  }
  const reached = failedAt === undefined || failedAt === "tls";
  if (secure && reached) {
    const cert = report.certificate;
    show(
      "tls",
      outcomeOf(
        "tls",
        `certificate for ${relay.hostname} issued by "${cert?.issuer ?? "?"}" is trusted${net.insecure ? " (NOT verified: --insecure)" : ""}`,
      ),
    );
  } else if (!secure) {
    show("tls", { ok: "skip", detail: "plain http:// relay (a local one); use https:// on port 443 through corporate networks" });
  }
  if (failedAt) {
    show("websocket", { ok: "skip", detail: "not tried: the steps above must work first" });
    show("https", { ok: "skip", detail: "not tried: the steps above must work first" });
    print("verdict: the relay cannot be reached; fix the first FAIL above");
    return 5;
  }

  const info = await probeInfo(relay, net);
  show("relay", info);
  if (info.ok !== true) {
    show("websocket", { ok: "skip", detail: "not tried: the relay step must work first" });
    show("https", { ok: "skip", detail: "not tried: the relay step must work first" });
    print(`verdict: ${info.detail}; see the hint above`);
    return 5;
  }

  const websocket = await probeWebSocket(relay, name, net, role);
  show("websocket", websocket);
  const https = await probeHttps(relay, name, net, connect ? "" : token, role);
  show("https", https);
  const last = connect ? "key" : "token";
  if (websocket.ok !== true && https.ok !== true) {
    show(last, { ok: "skip", detail: "not tried: no transport gets through" });
    print("verdict: neither transport gets through; see the hints above");
    return 5;
  }
  const transport = websocket.ok === true ? "websocket" : "https";
  const accepted = connect
    ? await probeConnect(relay, net, name, connect.key, transport, agent.version)
    : await probeToken(relay, net, token, transport, agent.version, agent.tcp !== undefined);
  show(last, accepted);
  const [local, what] = agent.tcp ? ["target", "target"] : ["origin", "local server"];
  const origin = agent.tcp ? await probeTarget(agent.tcp) : agent.origin ? await probeOrigin(agent.origin) : undefined;
  if (origin) show(local, origin);
  const who = connect ? `agent connect ${name}` : "the agent";
  if (accepted.ok !== true) {
    const whom = connect ? "this visitor" : "this agent";
    print(`verdict: the relay ${accepted.refused ? "refuses" : "did not accept"} ${whom}; see the hint above`);
    return accepted.refused ? 3 : 5;
  }
  if (origin && origin.ok !== true) {
    print(`verdict: the relay is ready, but the ${what} does not answer; see the hint above`);
    return 1;
  }
  print(
    transport === "websocket"
      ? `verdict: ${who} will use the WebSocket transport`
      : `verdict: WebSockets do not get through; ${who} will use the HTTPS transport (by itself, with --transport auto)`,
  );
  return 0;
}

/**
 * The "pac" step: where the PAC file is, what it answered for the relay and why (the helpers it
 * called and their results, which show the rule that decided), or what WPAD found.
 */
function showPac(
  settings: PacSettings,
  decision: PacDecision | undefined,
  failure: NetworkError | undefined,
  show: (step: string, outcome: Outcome) => void,
  print: (line: string) => void,
): void {
  if (failure) {
    show("pac", { ok: false, detail: failure.message, hint: failure.hint });
    return;
  }
  if (!decision) return;
  if (!decision.location) {
    show("pac", { ok: "skip", detail: `WPAD found no PAC file at ${settings.location}: connecting directly` });
    return;
  }
  const found = settings.wpad ? `WPAD found ${decision.location}` : `${decision.location} (from ${settings.source})`;
  show("pac", { ok: true, detail: `${found} answers ${JSON.stringify(decision.answer)}` });
  const indent = `     ${"".padEnd(10)}`;
  if (decision.trace.length > 0) print(`${indent} because ${decision.trace.join(", ")}`);
  for (const line of decision.skipped) print(`${indent} skipped ${line}`);
}

async function probeWebSocket(relay: URL, name: string, net: NetConfig, role: string | undefined): Promise<Outcome> {
  const url = new URL(CONNECT_PATH, relay);
  url.protocol = relay.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("name", name);
  if (role) url.searchParams.set("role", role);
  try {
    const link = await openWebSocket(await dial(url, net), url, net.timeoutMs);
    const started = performance.now();
    // The relay answers heartbeats itself: a round trip proves frames pass both ways.
    const answered = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), net.timeoutMs);
      link.onmessage = (message) => {
        if (message === HEARTBEAT.pong) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      link.onclose = () => resolve(false);
      link.send(HEARTBEAT.ping);
    });
    link.close(1000, "doctor done");
    if (!answered) {
      return {
        ok: false,
        detail: "the upgrade was accepted but no message came back (something in between cuts WebSockets)",
        hint: "the agent falls back to its HTTPS transport by itself (--transport auto)",
      };
    }
    return { ok: true, detail: `upgrade accepted; a heartbeat came back in ${Math.round(performance.now() - started)}ms` };
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("websocket", describe(error), "", false);
    return { ok: false, detail: failure.message, hint: failure.hint };
  }
}

async function probeHttps(relay: URL, name: string, net: NetConfig, token: string, role: string | undefined): Promise<Outcome> {
  let connection: HttpConnection | undefined;
  try {
    connection = await HttpConnection.open(relay, net);
    const started = performance.now();
    const opened = await connection.request(
      "POST",
      `${SESSION_PATH}?name=${encodeURIComponent(name)}${role ? `&role=${role}` : ""}`,
      {
        timeoutMs: net.timeoutMs,
        maxBody: 64 * 1024,
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      },
    );
    if (opened.status !== 201) {
      return {
        ok: false,
        detail: `opening a session was answered ${opened.status} ${opened.statusText}`,
        hint: opened.headers.has("x-burrow-error")
          ? ""
          : "something between the agent and the relay answered instead of the relay",
      };
    }
    const { session } = JSON.parse(opened.body.toString("utf8")) as { session: string };
    const base = `${SESSION_PATH}?name=${encodeURIComponent(name)}`;
    const headers = { [SESSION_HEADER]: session };
    const poll = await connection.request("GET", `${base}&ack=0&wait=0`, {
      timeoutMs: net.timeoutMs,
      maxBody: 1024 * 1024,
      headers,
    });
    await connection.request("DELETE", `${base}&code=1000&reason=doctor`, {
      timeoutMs: net.timeoutMs,
      maxBody: 64 * 1024,
      headers,
    });
    if (poll.status !== 200) return { ok: false, detail: `a poll was answered ${poll.status} ${poll.statusText}`, hint: "" };
    return { ok: true, detail: `session opened and polled in ${Math.round(performance.now() - started)}ms` };
  } catch (error) {
    const failure = error instanceof NetworkError ? error : new NetworkError("https", describe(error), "", false);
    return { ok: false, detail: failure.message, hint: failure.hint };
  } finally {
    connection?.close();
  }
}
