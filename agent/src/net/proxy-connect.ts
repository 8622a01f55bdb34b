// CONNECT through an HTTP proxy, answering its 407s: written once for every scheme. A 407's body
// is read and skipped so that the answer goes out on the same connection (NTLM's challenge
// belongs to it); a proxy that closes anyway gets the handshake again on a new connection.
// Everything is bounded, and a refused password is never sent again: accounts get locked.
import type net from "node:net";
import {
  MAX_PROXY_AUTH_ATTEMPTS,
  MAX_PROXY_AUTH_BODY,
  MAX_PROXY_AUTH_CONNECTIONS,
  MAX_PROXY_AUTH_ROUNDS,
} from "@burrow/protocol";
import type { DialReport, NetConfig } from "./dial.ts";
import type { ProxyConfig } from "./proxy.ts";
import { parseChallenges } from "./proxy-auth/challenge.ts";
import type { AuthContext, ProxyAuthExchange, ProxyAuthScheme } from "./proxy-auth/scheme.ts";
import { NoUsableScheme, SCHEMES, selectScheme } from "./proxy-auth/select.ts";
import { type Head, parseHead, SocketReader, skipBody } from "./reader.ts";
import { describe, forbidden, NetworkError, openTcp, withTimeout } from "./tcp.ts";

/** How a dial authenticated to its proxy, for `agent doctor` and messages. */
export interface ProxyAuthReport {
  scheme: string;
  user: string | undefined;
  /** Requests that carried credentials the proxy judged, over every connection of the dial. */
  attempts: number;
  /** TCP connections the dial opened to the proxy. */
  connections: number;
}

/** What the agent learnt about a proxy, for its next dials (the same ProxyConfig object). */
interface ProxyState {
  /** The scheme the proxy last accepted: the next connection opens with it. */
  scheme?: ProxyAuthScheme;
  /** Credentials the proxy refused: never sent again by this process. */
  refused?: NetworkError;
  /** Until the proxy accepted a dial, dials take turns: each would spend a try of a wrong password. */
  turn: Promise<void>;
  accepted: boolean;
}

const states = new WeakMap<ProxyConfig, ProxyState>();

/** A socket through `proxy` to host:port, authenticated as the proxy asks. */
export async function connectThrough(
  proxy: ProxyConfig,
  host: string,
  port: number,
  config: NetConfig,
  report: DialReport,
): Promise<net.Socket> {
  let state = states.get(proxy);
  if (!state) {
    state = { turn: Promise.resolve(), accepted: false };
    states.set(proxy, state);
  }
  if (state.refused) throw state.refused;
  if (state.accepted) return connectOnce(proxy, host, port, config, report, state);
  const previous = state.turn;
  let release = () => {};
  state.turn = new Promise<void>((resolve) => {
    release = resolve;
  });
  await previous;
  try {
    if (state.refused) throw state.refused;
    return await connectOnce(proxy, host, port, config, report, state);
  } finally {
    release();
  }
}

async function connectOnce(
  proxy: ProxyConfig,
  host: string,
  port: number,
  config: NetConfig,
  report: DialReport,
  state: ProxyState,
): Promise<net.Socket> {
  const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const context: AuthContext = {
    proxyHost: proxy.host,
    proxyPort: proxy.port,
    target: authority,
    credentials: proxy.credentials ?? config.credentialsFor?.(proxy.host),
    ffi: config.ffi,
  };
  let exchange: ProxyAuthExchange | undefined;
  let header: string | undefined;
  let spent = 0; // attempts of the exchanges given up with their connection
  const attempts = () => spent + (exchange?.attempts ?? 0);
  const opening = async (scheme: ProxyAuthScheme) => {
    exchange = await scheme.start(context);
    header = await exchange.respond(undefined);
  };
  /**
   * Before a new connection, when the proxy closed this one mid-handshake: a connection-bound
   * exchange starts over (`sent` attempts of it reached the proxy); `lost`: the last request
   * went unanswered. Bounded by connections and by attempts.
   */
  const startOver = async (
    current: ProxyAuthExchange,
    sent: number,
    connections: number,
    lost: boolean,
    offered = current.scheme,
  ) => {
    // A lost Basic or Digest header goes out again on the next connection, and a handshake that
    // got as far as its credentials sends them again: one more attempt each.
    const resent = lost && !current.connectionBound && current.attempts > 0 ? 1 : 0;
    const again = current.connectionBound && current.attempts > 0 ? 1 : resent;
    const tooMany = sent + again > MAX_PROXY_AUTH_ATTEMPTS;
    if (connections >= MAX_PROXY_AUTH_CONNECTIONS || tooMany) {
      const limit = tooMany
        ? `after ${sent} attempt${sent === 1 ? "" : "s"}, MAX_PROXY_AUTH_ATTEMPTS`
        : "MAX_PROXY_AUTH_CONNECTIONS";
      const error = new NetworkError(
        "connect",
        `the proxy ${proxy.display} closed the connection during the ${current.scheme} handshake ${connections} time${connections === 1 ? "" : "s"} (${limit})`,
        `${current.scheme} needs the connection kept open between its messages; try another scheme the proxy offers (${offered}) with --proxy-auth`,
        true,
      );
      if (attempts() > 0) state.refused = error;
      throw error;
    }
    if (!current.connectionBound) {
      spent += resent;
      return;
    }
    spent = sent;
    const scheme = SCHEMES.find((s) => s.name === current.scheme.toLowerCase());
    if (scheme) await opening(scheme);
  };
  // The scheme the proxy accepted last time opens at once (Basic's header, NTLM's Type 1).
  if (state.scheme) await opening(state.scheme).catch(() => undefined);
  for (let connections = 1; ; connections++) {
    const socket = await open(proxy, config);
    const reader = new SocketReader(socket);
    for (let rounds = 1; ; rounds++) {
      const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`, "User-Agent: burrow-agent"];
      // Keep-alive: the answer to a challenge goes out on the connection it came on.
      lines.push("Proxy-Connection: keep-alive", "Connection: keep-alive");
      if (header) lines.push(`Proxy-Authorization: ${header}`);
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
      let head: Head;
      try {
        head = parseHead(await withTimeout(reader.head(), config.timeoutMs, "no answer to CONNECT"));
      } catch (error) {
        socket.destroy();
        // A proxy that closed the connection after its 407 (EOF, a reset) although asked to keep
        // it open: the answer to its challenge was lost with it.
        if (header !== undefined && exchange && (error as { code?: string }).code !== "ETIMEDOUT") {
          await startOver(exchange, attempts(), connections, true);
          break;
        }
        throw new NetworkError(
          "connect",
          `the proxy ${proxy.display} did not answer CONNECT ${authority}: ${describe(error)}`,
          "check that it is an HTTP proxy (not SOCKS) and that its port is right",
          false,
        );
      }
      const answer = `${head.status} ${head.statusText}`.trim();
      report.connect = answer;
      if (exchange) {
        const user = exchange.principal ?? context.credentials?.user;
        report.proxyAuth = { scheme: exchange.scheme, user, attempts: attempts(), connections };
      }
      if (head.status === 200) {
        const early = reader.release();
        if (early.byteLength > 0) socket.unshift(early);
        state.accepted = true;
        state.scheme = exchange && SCHEMES.find((scheme) => scheme.name === exchange!.scheme.toLowerCase());
        return socket;
      }
      if (head.status !== 407) {
        socket.destroy();
        throw refusal(proxy, authority, port, head, answer);
      }
      const challenges = parseChallenges(head.lists.get("proxy-authenticate") ?? []);
      const fail = (message: string, hint: string) => {
        socket.destroy();
        const error = new NetworkError("connect", message, hint, true);
        if (attempts() > 0) state.refused = error;
        return error;
      };
      const offered = [...new Set(challenges.map((c) => c.scheme))].join(", ") || "no scheme";
      if (!exchange) {
        try {
          ({ exchange } = await selectScheme(challenges, context, config.proxyAuth));
        } catch (error) {
          if (!(error instanceof NoUsableScheme)) throw error;
          throw fail(`the proxy ${proxy.display} requires credentials (${answer}): ${error.message}`, error.hint);
        }
      }
      const current: ProxyAuthExchange = exchange;
      const before = attempts();
      let next: string | undefined;
      try {
        next = await current.respond(challenges.find((c) => c.name === current.scheme.toLowerCase()));
      } catch (error) {
        throw fail(
          `the proxy ${proxy.display} sent a ${current.scheme} challenge this agent cannot answer: ${(error as Error).message}`,
          `try another scheme the proxy offers (${offered}) with --proxy-auth`,
        );
      }
      if (next === undefined) throw fail(...rejected(proxy, current, context, answer, attempts(), offered));
      if (rounds >= MAX_PROXY_AUTH_ROUNDS) {
        throw fail(
          `the proxy ${proxy.display} kept answering ${current.scheme} with 407 (${rounds} times on one connection, MAX_PROXY_AUTH_ROUNDS)`,
          `try another scheme the proxy offers (${offered}) with --proxy-auth`,
        );
      }
      header = next;
      const closing = /\bclose\b/i.test(`${head.headers.get("connection") ?? ""} ${head.headers.get("proxy-connection") ?? ""}`);
      const reusable =
        !closing &&
        (await withTimeout(skipBody(reader, head, MAX_PROXY_AUTH_BODY), config.timeoutMs, "the 407's body").catch(() => false));
      if (reusable) continue;
      socket.destroy();
      // The answer computed for this connection was not sent: it does not count.
      await startOver(current, before, connections, false, offered);
      break;
    }
  }
}

async function open(proxy: ProxyConfig, config: NetConfig): Promise<net.Socket> {
  try {
    return await openTcp(proxy.host, proxy.port, config.timeoutMs, config.signal);
  } catch (error) {
    if (forbidden(error)) throw error;
    throw new NetworkError(
      "proxy",
      `cannot reach the proxy ${proxy.display} (from ${proxy.source}): ${describe(error)}`,
      "check the proxy's host and port (the system's or the browser's proxy settings show them), or pass --proxy none to connect directly",
      false,
    );
  }
}

/** The message and hint for credentials the proxy refused. */
function rejected(
  proxy: ProxyConfig,
  exchange: ProxyAuthExchange,
  context: AuthContext,
  answer: string,
  attempts: number,
  offered: string,
): [string, string] {
  const scheme = exchange.scheme;
  if (attempts === 0) {
    return [
      `the proxy ${proxy.display} did not go on with the ${scheme} handshake (${answer})`,
      `try another scheme the proxy offers (${offered}) with --proxy-auth`,
    ];
  }
  const tries = `${attempts} attempt${attempts === 1 ? "" : "s"}`;
  if (exchange.principal) {
    return [
      `the proxy ${proxy.display} refused the Kerberos ticket of ${exchange.principal} for HTTP@${proxy.host} (${answer})`,
      "the proxy's Kerberos setup does not accept this ticket: check with `klist` that it is for the proxy's realm, and ask the proxy's administrators whether HTTP/" +
        `${proxy.host} is in its keytab; or give credentials (BURROW_PROXY_USER and BURROW_PROXY_PASSWORD) for NTLM with --proxy-auth ntlm`,
    ];
  }
  const user = context.credentials?.user ?? "";
  const which = /ntlm|negotiate/i.test(scheme)
    ? "the user, its domain (DOMAIN\\user or user@DOMAIN) and the password"
    : "the user name and the password";
  const fromUrl = context.credentials?.source.startsWith("the proxy URL");
  return [
    `the proxy ${proxy.display} refused the ${scheme} credentials of user "${user}" (${answer}); the agent stopped after ${tries}, so as not to lock the account`,
    `check ${which}, from ${context.credentials?.source ?? "the settings"}${fromUrl ? "; percent-encode special characters in the URL (@ as %40, : as %3A, / as %2F, \\ as %5C, space as %20)" : ""}`,
  ];
}

/** The error for a CONNECT answered with neither 200 nor 407. */
function refusal(proxy: ProxyConfig, authority: string, port: number, head: Head, answer: string): NetworkError {
  if (head.status === 502 || head.status === 503 || head.status === 504) {
    return new NetworkError(
      "connect",
      `the proxy ${proxy.display} could not reach the relay at ${authority} (${answer})`,
      "check --relay and that the relay is running; the proxy itself works",
      false,
    );
  }
  return new NetworkError(
    "connect",
    `the proxy ${proxy.display} refused to open a tunnel to ${authority} (${answer})`,
    port === 443
      ? "the proxy's policy blocks this host: ask the network's administrators to allow it"
      : `proxies usually allow CONNECT to port 443 only: serve the relay on https://...:443 (port ${port} is what was asked)`,
    true,
  );
}
