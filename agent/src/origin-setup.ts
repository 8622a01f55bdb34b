import { readFileSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { resolve } from "node:path";
import { connect as connectTls } from "node:tls";
import type { LinkService } from "./agent.ts";
import { AgentError } from "./errors.ts";
import type { Log } from "./log.ts";
import { Origin, UNREACHABLE, UNTRUSTED, untrustedMessage } from "./origin.ts";
import type { Runtime } from "./runtime.ts";
import { serveDirectory } from "./static.ts";
import { parseTcpTarget, tcpService } from "./tcp/setup.ts";

/** One tunnel's origin, and what it took to set up (the file server of --dir). */
export interface OriginSetup {
  /** The HTTP origin; undefined for a TCP tunnel. */
  origin: Origin | undefined;
  /** What the tunnel's agent serves: the origin, or a TCP target (tcp/setup.ts). */
  served: Origin | LinkService;
  /** The origin or target, for the start line. */
  label: string;
  /** Looks at the origin once at start and warns of what will fail; never throws. */
  check(log: Log): Promise<void>;
  close(): void;
}

/**
 * Builds the origin one tunnel's settings describe: --port (and --host), --origin or --dir,
 * with --host-header, --origin-ca and --origin-insecure.
 * @throws {AgentError} "usage" for missing, conflicting or bad values.
 */
export async function setUpOrigin(values: Record<string, string>, runtime: Runtime): Promise<OriginSetup> {
  const given = ["port", "origin", "dir", "tcp"].filter((key) => values[key] !== undefined);
  if (given.length > 1) {
    throw new AgentError(
      "usage",
      `${given.map((key) => `--${key}`).join(" and ")} are both given`,
      "a tunnel forwards to one origin: give --port, --origin, --dir or --tcp",
    );
  }
  if (values.tcp !== undefined) {
    const http = ["host-header", "origin-ca", "origin-insecure", "dir-dotfiles"].find((key) => values[key] !== undefined);
    if (http) {
      throw new AgentError(
        "usage",
        `--${http} applies to web servers, not to a --tcp tunnel`,
        "leave it out; --tcp takes a port or HOST:PORT",
      );
    }
    const target = parseTcpTarget(values.tcp);
    const served = tcpService(target);
    return { origin: undefined, served, label: served.label, check: (log) => checkTcpTarget(target, log), close: () => {} };
  }
  const hostHeader = values["host-header"] ?? "rewrite";
  if (!/^[\x21-\x7e]+$/.test(hostHeader)) {
    throw new AgentError(
      "usage",
      `--host-header ${JSON.stringify(hostHeader)} is not a host`,
      "use rewrite, preserve, or a host such as app.example.com",
    );
  }
  const insecure = values["origin-insecure"] === "true";
  const ca = values["origin-ca"] === undefined ? undefined : readPem(values["origin-ca"], runtime, "--origin-ca");
  if (values.dir !== undefined) {
    const dir = values.dir;
    let server: Awaited<ReturnType<typeof serveDirectory>>;
    try {
      server = await serveDirectory(dir, { dotfiles: values["dir-dotfiles"] === "true" });
    } catch (error) {
      if (runtime.explain?.(error)) throw error;
      throw new AgentError(
        "usage",
        `--dir ${dir} cannot be served: ${(error as Error).message}`,
        "give --dir an existing directory",
      );
    }
    const origin = new Origin(new URL(`http://127.0.0.1:${server.port}`), { hostHeader, label: resolve(dir) });
    return { origin, served: origin, label: origin.label, check: async () => {}, close: () => server.close() };
  }
  let target: URL;
  if (values.origin !== undefined) {
    try {
      target = new URL(values.origin);
    } catch {
      throw new AgentError(
        "usage",
        `--origin ${JSON.stringify(values.origin)} is not a URL`,
        "for example --origin http://10.0.0.5:8080",
      );
    }
    if ((target.protocol !== "http:" && target.protocol !== "https:") || (target.pathname !== "/" && target.pathname !== "")) {
      throw new AgentError(
        "usage",
        `--origin ${values.origin} must be http:// or https://, a host and a port, and no path`,
        "for example --origin https://localhost:8443; visitors' paths are passed on as they come",
      );
    }
  } else {
    const port = portNumber(values.port);
    const host = values.host ?? "localhost";
    target = new URL(`http://${host.includes(":") ? `[${host}]` : host}:${port}`);
  }
  if (target.protocol !== "https:" && (ca || insecure)) {
    throw new AgentError(
      "usage",
      "--origin-ca and --origin-insecure apply to an https:// --origin only",
      "leave them out, or give --origin https://HOST:PORT",
    );
  }
  const origin = new Origin(target, { hostHeader, ca, insecure });
  const check = (log: Log) => {
    if (insecure) log.warn(`--origin-insecure: the certificate of ${origin.url} is not verified`);
    return checkOrigin(origin, log);
  };
  return { origin, served: origin, label: origin.label, check, close: () => origin.close() };
}

/** How long the start-up look at the origin may take; past it, the agent says nothing. */
const ORIGIN_CHECK_MS = 2_000;

/** Says at once when nothing listens on the origin's port, or its certificate will be refused; the tunnel opens all the same. */
async function checkOrigin(origin: Origin, log: Log): Promise<void> {
  const url = new URL(origin.url);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port);
  const code = await new Promise<string | undefined>((done) => {
    const socket = origin.secure ? connectTls({ host, port, ...origin.tls } as never) : connectTcp({ host, port });
    const timer = setTimeout(() => finish(undefined), ORIGIN_CHECK_MS);
    const finish = (result: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      done(result);
    };
    socket.once(origin.secure ? "secureConnect" : "connect", () => finish(undefined));
    socket.once("error", (error: NodeJS.ErrnoException) => finish(error.code ?? "error"));
  });
  if (code && UNREACHABLE.has(code)) {
    const where = origin.url.replace(/^http:\/\//, "");
    log.warn(`nothing is listening on ${where} yet; visitors get 502 origin-unreachable until it does`, "origin-down", {
      origin: origin.url,
      code,
    });
  } else if (code && UNTRUSTED.has(code)) {
    log.warn(`${untrustedMessage(origin.url, code)}; visitors get 502 origin-error until then`, "origin-untrusted", {
      origin: origin.url,
      code,
    });
  }
}

/**
 * Reads a file the user named (a CA, a token): a missing runtime permission is the runtime's
 * to explain (Deno's flags), anything else a usage error naming `what`, with `hint`.
 * @throws {AgentError} "usage"
 */
export function readUserFile(file: string, runtime: Runtime, what: string, hint: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    if (runtime.explain?.(error)) throw error;
    throw new AgentError("usage", `cannot read ${what}: ${(error as Error).message}`, hint);
  }
}

/** Reads a PEM file of CA certificates, for --ca, --origin-ca and NODE_EXTRA_CA_CERTS. */
export function readPem(file: string, runtime: Runtime, flag = "--ca"): string {
  const text = readUserFile(file, runtime, `the CA file ${file} (${flag})`, "give the path of a PEM file");
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new AgentError(
      "usage",
      `${flag} ${file} holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`,
      "export the CA as PEM (Base-64 encoded X.509); a DER file converts with: openssl x509 -inform der -in ca.cer -out ca.pem",
    );
  }
  return text;
}

function portNumber(text: string | undefined): number {
  if (text === undefined) {
    throw new AgentError(
      "usage",
      "which local port should the tunnel expose?",
      "pass it with --port, for example: agent --port 8000",
    );
  }
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new AgentError("usage", `--port ${text} is not a port number`, "use a number from 1 to 65535, for example --port 8000");
  }
  return value;
}

/** Says at once when nothing listens on a TCP tunnel's target; the tunnel opens all the same. */
async function checkTcpTarget(target: { host: string; port: number; label: string }, log: Log): Promise<void> {
  const error = await new Promise<Error | undefined>((done) => {
    const socket = connectTcp({ host: target.host, port: target.port });
    const timer = setTimeout(() => finish(undefined), ORIGIN_CHECK_MS);
    const finish = (result: Error | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      done(result);
    };
    socket.once("connect", () => finish(undefined));
    socket.once("error", (e) => finish(e));
  });
  if (!error) return;
  const code = (error as NodeJS.ErrnoException).code ?? error.message;
  log.warn(
    `nothing answers at ${target.label} (${code}): visitors' connections will fail until something listens there`,
    "tcp-unreachable",
  );
}
