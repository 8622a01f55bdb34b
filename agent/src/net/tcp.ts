// TCP connections out, and the error every step of the way to the relay throws.
import net from "node:net";

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

/**
 * A TCP connection. Aborting `signal` destroys it, at any time of its life: while connecting,
 * and during what follows on it (a proxy's CONNECT and authentication, TLS, the upgrade), so a
 * stopped agent waits for none of their timeouts.
 */
export function openTcp(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(Object.assign(new Error("stopped"), { code: "ABORT_ERR" }));
    const socket = net.connect({ host, port });
    if (signal) {
      const abort = () => socket.destroy(Object.assign(new Error("stopped"), { code: "ABORT_ERR" }));
      signal.addEventListener("abort", abort, { once: true });
      socket.once("close", () => signal.removeEventListener("abort", abort));
    }
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
export function forbidden(error: unknown): boolean {
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
