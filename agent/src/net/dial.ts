import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { type PacDecision, PacFailure, type PacProxies } from "./pac/pac.ts";
import type { ProxyConfig } from "./proxy.ts";
import { parseHead, SocketReader } from "./reader.ts";

/** How the agent reaches the relay: the same for the WebSocket and the HTTPS transport. */
export interface NetConfig {
  proxy: ProxyConfig | undefined;
  /** The PAC file (--proxy-pac, or WPAD with --proxy auto) that chooses the proxies instead of `proxy`. */
  pac?: PacProxies;
  /** Says one line to the user: a PAC's choice that failed and the one tried next. */
  note?: (line: string) => void;
  /** Extra trusted CA certificates (PEM), from --ca and NODE_EXTRA_CA_CERTS, added to the usual roots. */
  ca: string[];
  /** Turns certificate verification off (--insecure). */
  insecure: boolean;
  /** Limit for each step: TCP connect, CONNECT answer, TLS handshake. */
  timeoutMs: number;
}

/** The steps of the path to the relay, as `agent doctor` shows them. */
export type Step = "proxy" | "connect" | "tls" | "relay" | "websocket" | "https";

/**
 * A failure on the way to the relay, with what to do about it. `fatal` ones (wrong proxy
 * credentials, a proxy policy, an untrusted certificate) would fail the same way on every
 * retry, so the agent stops and says so; the others are retried with backoff.
 */
export class NetworkError extends Error {
  override readonly name = "NetworkError";

  constructor(
    readonly step: Step,
    message: string,
    readonly hint: string,
    readonly fatal: boolean,
  ) {
    super(message);
  }
}

/** What the dial found on its way, for `agent doctor` and the transport line. */
export interface DialReport {
  /** The proxy's answer to CONNECT, e.g. "200 Connection established". */
  connect?: string;
  /** The relay's certificate: subject and issuer. */
  certificate?: { subject: string; issuer: string };
  /** What the PAC file decided, when there is one. */
  pac?: PacDecision;
  /** The proxy the connection went through (undefined: directly). */
  proxy?: ProxyConfig;
}

/**
 * Opens a byte stream to `target` (http: or https:, ws: or wss:): through the proxy's CONNECT
 * when there is one, then TLS for https with the configured trust. Nagle is off: the agent
 * batches frames itself.
 * @throws {NetworkError} naming the step that failed and the fix.
 */
export async function dial(target: URL, config: NetConfig, report: DialReport = {}): Promise<Duplex> {
  const secure = target.protocol === "https:" || target.protocol === "wss:";
  const host = target.hostname.replace(/^\[|\]$/g, "");
  const port = Number(target.port) || (secure ? 443 : 80);
  const raw = config.pac
    ? await throughPac(config.pac, target, host, port, config, report)
    : config.proxy
      ? await connectThrough(config.proxy, host, port, config, report)
      : await direct(host, port, config);
  if (!secure) return raw;
  return handshake(raw, host, port, config, report, target);
}

/**
 * The PAC's choices in order. A failure to reach a proxy (or, for DIRECT, the relay), or a proxy
 * that cannot reach the relay (502-504), moves on to the next choice, as browsers do; a fatal
 * one (credentials refused, a policy's 403) stops the list: the next choice would only repeat
 * the credentials (accounts lock after a few bad tries) or go around the network's policy.
 */
async function throughPac(pac: PacProxies, target: URL, host: string, port: number, config: NetConfig, report: DialReport) {
  let decision: PacDecision;
  try {
    decision = await pac.decide(target);
  } catch (error) {
    if (!(error instanceof PacFailure)) throw error;
    throw new NetworkError("proxy", error.message, error.hint, error.fatal);
  }
  report.pac = decision;
  const { choices } = decision;
  for (let i = 0; ; i++) {
    const proxy = choices[i];
    report.proxy = proxy;
    try {
      return proxy ? await connectThrough(proxy, host, port, config, report) : await direct(host, port, config);
    } catch (error) {
      if (!(error instanceof NetworkError) || error.fatal || i === choices.length - 1) throw error;
      const next = choices[i + 1];
      config.note?.(`${error.message}; trying ${next ? `${next.host}:${next.port}` : "DIRECT"}`);
    }
  }
}

async function direct(host: string, port: number, config: NetConfig): Promise<net.Socket> {
  try {
    return await openTcp(host, port, config.timeoutMs);
  } catch (error) {
    if (forbidden(error)) throw error;
    throw new NetworkError(
      "relay",
      `cannot reach the relay at ${host}:${port}: ${describe(error)}`,
      "if this network reaches the web only through a proxy, set HTTPS_PROXY or pass --proxy http://HOST:PORT; otherwise check --relay and that the relay is running",
      false,
    );
  }
}

async function connectThrough(proxy: ProxyConfig, host: string, port: number, config: NetConfig, report: DialReport) {
  let socket: net.Socket;
  try {
    socket = await openTcp(proxy.host, proxy.port, config.timeoutMs);
  } catch (error) {
    if (forbidden(error)) throw error;
    throw new NetworkError(
      "proxy",
      `cannot reach the proxy ${proxy.display} (from ${proxy.source}): ${describe(error)}`,
      "check the proxy's host and port (the system's or the browser's proxy settings show them), or pass --proxy none to connect directly",
      false,
    );
  }
  const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`, "User-Agent: burrow-agent"];
  if (proxy.authorization) lines.push(`Proxy-Authorization: ${proxy.authorization}`);
  socket.write(`${lines.join("\r\n")}\r\n\r\n`);
  const reader = new SocketReader(socket);
  let head: ReturnType<typeof parseHead>;
  try {
    head = parseHead(await withTimeout(reader.head(), config.timeoutMs, "no answer to CONNECT"));
  } catch (error) {
    socket.destroy();
    throw new NetworkError(
      "connect",
      `the proxy ${proxy.display} did not answer CONNECT ${authority}: ${describe(error)}`,
      "check that it is an HTTP proxy (not SOCKS) and that its port is right",
      false,
    );
  }
  const answer = `${head.status} ${head.statusText}`.trim();
  report.connect = answer;
  if (head.status === 200) {
    const early = reader.release();
    if (early.byteLength > 0) socket.unshift(early);
    return socket;
  }
  socket.destroy();
  if (head.status === 407) {
    const schemes = head.headers.get("proxy-authenticate") ?? "";
    const basic = /\bbasic\b/i.test(schemes) || !schemes;
    const message = proxy.username
      ? `the proxy ${proxy.display} rejected the credentials of user "${proxy.username}" (${answer})`
      : `the proxy ${proxy.display} requires credentials (${answer})`;
    const hint = !basic
      ? `the proxy asks for ${schemes}, which the agent does not speak (it sends Basic credentials); ask for Basic, or run a local relay proxy such as cntlm and point --proxy at it`
      : proxy.username
        ? "check the user name and password in the proxy URL; percent-encode special characters (@ as %40, : as %3A, / as %2F, space as %20)"
        : "put them in the proxy URL: --proxy http://USER:PASSWORD@HOST:PORT or HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT (percent-encode special characters)";
    throw new NetworkError("connect", message, hint, true);
  }
  if (head.status === 502 || head.status === 503 || head.status === 504) {
    throw new NetworkError(
      "connect",
      `the proxy ${proxy.display} could not reach the relay at ${authority} (${answer})`,
      "check --relay and that the relay is running; the proxy itself works",
      false,
    );
  }
  throw new NetworkError(
    "connect",
    `the proxy ${proxy.display} refused to open a tunnel to ${authority} (${answer})`,
    port === 443
      ? "the proxy's policy blocks this host: ask the network's administrators to allow it"
      : `proxies usually allow CONNECT to port 443 only: serve the relay on https://...:443 (port ${port} is what was asked)`,
    true,
  );
}

/** Codes with which TLS stacks say the certificate chain is not trusted or not for this host. */
const CERTIFICATE_ERRORS = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
]);

async function handshake(
  raw: Duplex,
  host: string,
  port: number,
  config: NetConfig,
  report: DialReport,
  target: URL,
): Promise<tls.TLSSocket> {
  const options: tls.ConnectionOptions = {
    socket: raw,
    // Over a socket of our own, tls.connect knows the peer only from these: without `host`
    // it checks the certificate against "localhost", which fails for a relay reached by IP.
    host,
    servername: net.isIP(host) ? undefined : host,
    rejectUnauthorized: !config.insecure,
    ALPNProtocols: ["http/1.1"],
  };
  if (config.ca.length > 0) options.ca = [...tls.rootCertificates, ...config.ca];
  try {
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const socket = tls.connect(options);
      const timer = setTimeout(
        () => socket.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })),
        config.timeoutMs,
      );
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    report.certificate = certificateOf(socket);
    return socket;
  } catch (error) {
    raw.destroy();
    const code = (error as { code?: string }).code ?? "";
    if (!CERTIFICATE_ERRORS.has(code) && !/certificate|self.signed|issuer/i.test((error as Error).message)) {
      throw new NetworkError(
        "tls",
        `the TLS handshake with ${host}:${port} failed: ${describe(error)}`,
        config.proxy ? "a proxy may be interfering: try `agent doctor`" : "check that --relay is an https:// relay",
        false,
      );
    }
    // Look again without verifying, only to name who signed what the agent was shown.
    const seen = await dial(target, { ...config, insecure: true, note: undefined }).then(
      (socket) => {
        const found = certificateOf(socket as tls.TLSSocket);
        socket.destroy();
        return found;
      },
      () => undefined,
    );
    if (seen) report.certificate = seen;
    const issuer = seen ? `issued by "${seen.issuer}"` : "not trusted";
    const wrongHost = code === "ERR_TLS_CERT_ALTNAME_INVALID" || code === "HOSTNAME_MISMATCH";
    throw new NetworkError(
      "tls",
      wrongHost
        ? `the certificate presented for ${host} is for "${seen?.subject ?? "another host"}" (${code})`
        : `the certificate presented for ${host} is ${issuer}, which this agent does not trust (${code || (error as Error).message})`,
      wrongHost
        ? "check --relay; if a proxy inspects TLS, it presented its own certificate"
        : "a TLS-inspecting proxy re-signs HTTPS with its own CA: get that CA's certificate (PEM) from the network's administrators and pass it with --ca FILE, or NODE_EXTRA_CA_CERTS=FILE (--insecure turns verification off, which is not safe)",
      true,
    );
  }
}

function certificateOf(socket: tls.TLSSocket): { subject: string; issuer: string } | undefined {
  const cert = socket.getPeerCertificate?.();
  if (!cert?.issuer) return undefined;
  return { subject: distinguishedName(cert.subject), issuer: distinguishedName(cert.issuer) };
}

function distinguishedName(name: object | undefined): string {
  if (!name) return "";
  const order = ["CN", "OU", "O", "L", "ST", "C"];
  const entries = Object.entries(name).sort(([a], [b]) => ((order.indexOf(a) + 99) % 99) - ((order.indexOf(b) + 99) % 99));
  return entries.map(([key, value]) => `${key}=${Array.isArray(value) ? value.join("+") : value}`).join(", ");
}

function openTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`no answer within ${timeoutMs / 1000}s`), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * A runtime that forbids the connection (Deno without --allow-net) will forbid it on every
 * retry: such errors pass through untouched, for the runtime's entry to explain.
 */
function forbidden(error: unknown): boolean {
  return error instanceof Error && (error.name === "NotCapable" || error.name === "PermissionDenied");
}

const CAUSES: Record<string, string> = {
  ECONNREFUSED: "connection refused (nothing listens there, or a firewall rejects it)",
  ECONNRESET: "the connection was reset",
  ETIMEDOUT: "no answer (a firewall may drop the traffic)",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "the name does not resolve",
  EAI_AGAIN: "the name does not resolve (DNS is not answering)",
  EPIPE: "the connection was closed",
};

/** A short cause for a network error: its code in words, else its message. */
export function describe(error: unknown): string {
  const code = (error as { code?: string })?.code;
  const message = (error as Error)?.message ?? String(error);
  return code && CAUSES[code] ? `${CAUSES[code]}, ${code}` : message;
}

/** Rejects with `why` when `promise` takes longer than `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(why), { code: "ETIMEDOUT" })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
