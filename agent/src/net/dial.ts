import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { INFO_PATH } from "@burrow/protocol";
import type { Ffi } from "../runtime.ts";
import { type PacDecision, PacFailure, type PacProxies } from "./pac/pac.ts";
import type { ProxyConfig } from "./proxy.ts";
import type { Credentials } from "./proxy-auth/scheme.ts";
import { connectThrough, type ProxyAuthReport } from "./proxy-connect.ts";
import { describe, forbidden, NetworkError, openTcp, withTimeout } from "./tcp.ts";

export { describe, NetworkError, type Step, withTimeout } from "./tcp.ts";

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
  /** The proxy authentication scheme --proxy-auth pins (lowercase), else the strongest offered. */
  proxyAuth?: string;
  /**
   * Credentials for a proxy whose URL carries none (BURROW_PROXY_USER and BURROW_PROXY_PASSWORD,
   * or burrow.toml): also asked for the proxies a PAC file names.
   */
  credentialsFor?: (proxyHost: string) => Credentials | undefined;
  /** The runtime's FFI, for Negotiate's GSSAPI (Runtime.ffi); absent on Node 20. */
  ffi?: () => Promise<Ffi>;
  /** Aborted when the agent stops: every socket the dial opened is destroyed, whatever step it is at. */
  signal?: AbortSignal;
}

/** What the dial found on its way, for `agent doctor` and the transport line. */
export interface DialReport {
  /** The proxy's answer to CONNECT, e.g. "200 Connection established". */
  connect?: string;
  /** How the proxy was authenticated to, when it asked. */
  proxyAuth?: ProxyAuthReport;
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
    const trusted = proxy !== undefined && pac.mayAuthenticate(proxy.host);
    const credentialsFor = trusted ? config.credentialsFor : undefined;
    try {
      if (!proxy) return await direct(host, port, config);
      return await connectThrough(proxy, host, port, { ...config, credentialsFor }, report);
    } catch (error) {
      const asked = error instanceof NetworkError && error.fatal && /\b407\b/.test(error.message);
      if (asked && proxy && !trusted && config.credentialsFor?.(proxy.host)) {
        throw new NetworkError(
          error.step,
          error.message,
          `credentials go to a proxy that WPAD found only when you name its host: --proxy-credentials-for ${proxy.host}`,
          true,
        );
      }
      if (error instanceof NetworkError && !proxy && i === choices.length - 1) {
        throw new NetworkError(
          error.step,
          `${error.message} (the PAC file says DIRECT)`,
          "the PAC file sends this relay directly and it cannot be reached that way: `agent doctor` shows the PAC's answer and why; --proxy http://HOST:PORT overrides it",
          error.fatal,
        );
      }
      if (!(error instanceof NetworkError) || error.fatal || i === choices.length - 1) throw error;
      const next = choices[i + 1];
      config.note?.(`${error.message}; trying ${next ? `${next.host}:${next.port}` : "DIRECT"}`);
    }
  }
}

async function direct(host: string, port: number, config: NetConfig): Promise<net.Socket> {
  try {
    return await openTcp(host, port, config.timeoutMs, config.signal);
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
  let probe: Promise<boolean> | undefined;
  const plain = () => {
    probe ??= speaksPlainBurrow(host, port, config);
    return probe;
  };
  try {
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const socket = tls.connect(options);
      const timer = setTimeout(
        () => socket.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })),
        config.timeoutMs,
      );
      // A plain-http relay (`npm run relay`, wrangler dev) says nothing to a ClientHello: asked
      // over plain HTTP a moment later, it answers, and the agent says so then, not at the timeout.
      // Direct connections only: through a proxy a slow handshake is common, and the question
      // would cost the proxy another connection (and its authentication) for nothing.
      const direct = !config.proxy && !config.pac;
      const early = setTimeout(() => {
        if (!direct) return;
        void plain().then((yes) => {
          if (yes) socket.destroy(Object.assign(new Error("plain HTTP"), { code: PLAIN_HTTP }));
        });
      }, PLAIN_PROBE_AFTER_MS);
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        clearTimeout(early);
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        clearTimeout(early);
        reject(error);
      });
    });
    report.certificate = certificateOf(socket);
    return socket;
  } catch (error) {
    raw.destroy();
    const code = (error as { code?: string }).code ?? "";
    if (code === PLAIN_HTTP || (PLAINTEXT_ERRORS.has(code) && (await plain()))) {
      throw new NetworkError(
        "tls",
        `${host}:${port} speaks plain HTTP, not TLS: a Burrow relay answers at http://${target.host}`,
        `use --relay http://${target.host} (https:// is for a relay behind TLS, such as a deployed one)`,
        true,
      );
    }
    if (PLAINTEXT_ERRORS.has(code)) {
      throw new NetworkError(
        "tls",
        `the server at ${host}:${port} answered the TLS handshake in plain text (${code}): it is not an https:// server`,
        "check --relay: its scheme (http:// for a local relay), host and port",
        true,
      );
    }
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

/** TLS stacks' codes for a server that answered the ClientHello with plain text (an HTTP server). */
const PLAINTEXT_ERRORS = new Set(["ERR_SSL_WRONG_VERSION_NUMBER", "ERR_SSL_PACKET_LENGTH_TOO_LONG", "ERR_SSL_HTTP_REQUEST"]);
/** What a Burrow relay's INFO_PATH answers with (see RelayInfo). */
const BURROW_JSON = /"burrow"\s*:\s*true/;
/** The TLS handshake was cut because the server answered plain HTTP (see handshake). */
const PLAIN_HTTP = "BURROW_PLAIN_HTTP";
/**
 * How long a TLS handshake goes unanswered before the agent asks the server over plain HTTP
 * too. A handshake takes a few round trips, well under this even through a proxy; a slower
 * one costs one extra small request, and only a Burrow relay's answer ends the handshake.
 */
const PLAIN_PROBE_AFTER_MS = 1_000;

/**
 * Whether a Burrow relay answers plain HTTP at host:port (its INFO_PATH, through the same
 * proxy): only then is an https:// --relay certainly meant as http://.
 */
async function speaksPlainBurrow(host: string, port: number, config: NetConfig): Promise<boolean> {
  const authority = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
  let socket: Duplex | undefined;
  try {
    socket = await dial(new URL(`http://${authority}`), { ...config, note: undefined });
    const opened = socket;
    opened.write(`GET ${INFO_PATH} HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
    const answer = await withTimeout(
      new Promise<string>((resolve) => {
        let text = "";
        opened.on("data", (chunk: Buffer) => {
          text += chunk.toString("latin1");
          // Decided without waiting for the close (wrangler dev keeps the connection 5 s after
          // a Connection: close answer): an answer that is not 200, or the relay's JSON.
          const head = text.includes("\r\n\r\n");
          if (text.length > 16_384 || (head && !/^HTTP\/1\.[01] 200 /.test(text)) || BURROW_JSON.test(text)) resolve(text);
        });
        opened.once("end", () => resolve(text));
        opened.once("close", () => resolve(text));
        opened.once("error", () => resolve(text));
      }),
      config.timeoutMs,
      "no answer over plain HTTP",
    );
    return /^HTTP\/1\.[01] 200 /.test(answer) && BURROW_JSON.test(answer);
  } catch {
    return false;
  } finally {
    socket?.destroy();
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
