import { createHash } from "node:crypto";
import http from "node:http";
import { pattern } from "./_bytes.ts";
import { dialOptions } from "./_visit.ts";

/** What came through a streamed transfer, without keeping the bytes. */
export interface Transfer {
  status: number;
  length: number;
  sha256: string;
  body: string;
}

/**
 * Downloads `url` (dialing 127.0.0.1 with its Host), reading at most `bytesPerSecond`: a
 * visitor on a slow link. Rejects if the body breaks off.
 */
export function download(url: string, bytesPerSecond = Number.POSITIVE_INFINITY): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const request = http.get(dialOptions(url), (response) => {
      const hash = createHash("sha256");
      let length = 0;
      const started = performance.now();
      response.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
        const due = (length / bytesPerSecond) * 1000 - (performance.now() - started);
        if (due > 5) {
          response.pause();
          setTimeout(() => response.resume(), due);
        }
      });
      response.on("error", reject);
      response.on("end", () => {
        if (!response.complete) return reject(new Error(`download broke off after ${length} bytes`));
        resolve({ status: response.statusCode!, length, sha256: hash.digest("hex"), body: "" });
      });
    });
    request.on("error", reject);
  });
}

/** POSTs `pattern(size)` to `url` as fast as the tunnel takes it, and returns the answer. */
export function upload(url: string, size: number): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const request = http.request({ ...dialOptions(url, { "content-length": size }), method: "POST" }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () =>
        resolve({ status: response.statusCode!, length: 0, sha256: "", body: Buffer.concat(chunks).toString() }),
      );
    });
    request.on("error", reject);
    const chunks = pattern(size);
    const write = () => {
      for (let next = chunks.next(); !next.done; next = chunks.next()) {
        if (!request.write(next.value)) {
          request.once("drain", write);
          return;
        }
      }
      request.end();
    };
    write();
  });
}
