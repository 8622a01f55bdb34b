import { createHmac } from "node:crypto";
import http from "node:http";

/** A relay's answer to a visitor, read whole. */
export interface Answer {
  status: number;
  /** X-Burrow-Error, when the relay answered itself. */
  code: string | undefined;
  text: string;
}

export interface TrickleOptions {
  /** The visitor's own address (any of 127.0.0.0/8 reaches a relay on 127.0.0.1). */
  from: string;
  method?: string;
  headers?: Record<string, string>;
  /** Bytes written at once, then every `everyMs`, until `total` (without Content-Length if absent). */
  chunk: number;
  everyMs: number;
  total: number;
  /** Declares Content-Length: total (default true). */
  declared?: boolean;
}

/**
 * A visitor that sends its request head at once and its body slowly, from its own loopback
 * address, as someone holding a tunnel's slots would. `answer` settles with the relay's
 * answer (or rejects if the connection ends without one); `stop` ends the visitor.
 */
export class Trickler {
  readonly answer: Promise<Answer>;
  /** Resolves once the head and the first chunk are on the wire. */
  readonly started: Promise<void>;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly request: http.ClientRequest;

  constructor(url: string, options: TrickleOptions) {
    const target = new URL(url);
    const declared = options.declared ?? true;
    this.request = http.request({
      host: "127.0.0.1",
      port: target.port,
      path: target.pathname + target.search,
      method: options.method ?? "POST",
      localAddress: options.from,
      agent: false,
      headers: {
        host: target.host,
        ...(declared ? { "content-length": String(options.total) } : {}),
        ...options.headers,
      },
    });
    this.answer = new Promise((resolve, reject) => {
      this.request.on("response", (response) => {
        this.halt();
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", () => undefined);
        response.on("end", () => {
          const code = response.headers["x-burrow-error"];
          resolve({
            status: response.statusCode!,
            code: typeof code === "string" ? code : undefined,
            text: Buffer.concat(chunks).toString(),
          });
          this.request.destroy();
        });
      });
      this.request.on("error", reject);
      this.request.on("close", () => reject(new Error(`the connection from ${options.from} closed without an answer`)));
    });
    this.answer.catch(() => undefined); // judged by whoever awaits it
    let sent = 0;
    const write = (done?: () => void) => {
      const size = Math.min(options.chunk, options.total - sent);
      sent += size;
      this.request.write(Buffer.alloc(size, 0x61), () => done?.());
      if (sent >= options.total) {
        this.halt();
        this.request.end();
      }
    };
    this.started = new Promise((resolve) => {
      this.request.flushHeaders();
      write(resolve);
    });
    if (sent < options.total) this.timer = setInterval(() => write(), options.everyMs);
  }

  stop(): void {
    this.halt();
    this.request.destroy();
  }

  private halt(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** A request from `from`, read whole; the relay's own answers carry their code. */
export function ask(
  url: string,
  from: string,
  options: { method?: string; headers?: Record<string, string>; body?: Uint8Array } = {},
): Promise<Answer> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: "127.0.0.1",
        port: target.port,
        path: target.pathname + target.search,
        method: options.method ?? "GET",
        localAddress: from,
        agent: false,
        headers: { host: target.host, ...options.headers },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () => {
          const code = response.headers["x-burrow-error"];
          resolve({
            status: response.statusCode!,
            code: typeof code === "string" ? code : undefined,
            text: Buffer.concat(chunks).toString(),
          });
        });
      },
    );
    request.on("error", reject);
    request.end(options.body);
  });
}

/** GitHub's X-Hub-Signature-256 for `body` under `secret`. */
export function githubSignature(body: Uint8Array, secret: string): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}
