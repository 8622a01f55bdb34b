// Reading a PAC file: http:, https: (directly, never through a proxy: the PAC is what says which
// proxy), file: or a path, each within MAX_PAC_BYTES and, over the network, a time limit.

import { readFile, stat } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { MAX_PAC_BYTES } from "@burrow/protocol";

/** Why a PAC file could not be read; `lasting` when reading it again would fail the same way. */
export class PacFetchError extends Error {
  override readonly name = "PacFetchError";

  constructor(
    message: string,
    readonly lasting: boolean,
  ) {
    super(message);
  }
}

/** Where `location` points: a URL for http: and https:, else a file path. */
export function pacLocation(location: string): { url: URL } | { path: string } {
  if (/^https?:\/\//i.test(location)) return { url: new URL(location) };
  if (/^file:/i.test(location)) return { path: fileURLToPath(location) };
  return { path: location };
}

/**
 * The PAC file's text.
 * @throws {PacFetchError} naming the location and the cause (status, size, time, missing file).
 */
export async function readPac(location: string, options: { ca: string[]; timeoutMs: number }): Promise<string> {
  const where = pacLocation(location);
  if ("path" in where) {
    let size: number;
    try {
      size = (await stat(where.path)).size;
    } catch (error) {
      throw new PacFetchError(`cannot read the PAC file ${where.path}: ${(error as Error).message}`, true);
    }
    if (size > MAX_PAC_BYTES) throw tooLarge(where.path, size);
    return readFile(where.path, "utf8");
  }
  return get(where.url, options);
}

function tooLarge(location: string, size: number | string): PacFetchError {
  return new PacFetchError(`the PAC file ${location} is ${size} bytes; the limit is ${MAX_PAC_BYTES} (MAX_PAC_BYTES)`, true);
}

function get(url: URL, options: { ca: string[]; timeoutMs: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    const secure = url.protocol === "https:";
    const request = (secure ? https : http).get(url, {
      headers: { "user-agent": "burrow-agent", accept: "application/x-ns-proxy-autoconfig, */*" },
      agent: false,
      ...(secure && options.ca.length > 0 ? { ca: [...tls.rootCertificates, ...options.ca] } : {}),
    });
    const timer = setTimeout(() => {
      request.destroy(new PacFetchError(`the PAC file ${url.href} did not arrive within ${options.timeoutMs / 1000}s`, false));
    }, options.timeoutMs);
    request.on("error", (error) => {
      clearTimeout(timer);
      if (error instanceof PacFetchError) return reject(error);
      // An untrusted certificate stays untrusted on the next try.
      const certificate = /CERT|SELF_SIGNED|UNABLE_TO_(VERIFY|GET_ISSUER)/.test((error as NodeJS.ErrnoException).code ?? "");
      const fix = certificate ? " (pass the CA that signed it with --ca FILE)" : "";
      reject(new PacFetchError(`cannot fetch the PAC file ${url.href}: ${error.message}${fix}`, certificate));
    });
    request.on("response", (response) => {
      const status = response.statusCode ?? 0;
      if (status !== 200) {
        response.resume();
        clearTimeout(timer);
        // A 5xx may pass; a 404 or 403 will be the same on the next try.
        reject(
          new PacFetchError(
            `the PAC file ${url.href} was answered ${status} ${response.statusMessage ?? ""}`.trim(),
            status < 500,
          ),
        );
        return;
      }
      const declared = Number(response.headers["content-length"]);
      if (declared > MAX_PAC_BYTES) {
        request.destroy(tooLarge(url.href, declared));
        return;
      }
      const chunks: Buffer[] = [];
      let length = 0;
      response.on("data", (chunk: Buffer) => {
        length += chunk.length;
        if (length > MAX_PAC_BYTES) request.destroy(tooLarge(url.href, `more than ${MAX_PAC_BYTES}`));
        else chunks.push(chunk);
      });
      response.on("end", () => {
        clearTimeout(timer);
        if (!response.complete) reject(new PacFetchError(`the PAC file ${url.href} broke off after ${length} bytes`, false));
        else resolve(Buffer.concat(chunks).toString("utf8"));
      });
      response.on("error", () => undefined);
    });
  });
}
