// One measurement each, against a target: a base URL plus the Host header to send (tunnels are
// reached by subdomain, and Node's resolver does not map *.localhost to loopback).
import http from "node:http";
import autocannon from "autocannon";
import WebSocket from "ws";

export interface Target {
  /** http://127.0.0.1:<port> */
  base: string;
  host: string;
}

export interface Load {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

/** Small GETs at `connections` concurrency for `seconds`: requests/s and latency percentiles (ms). */
export async function load(target: Target, connections: number, seconds: number): Promise<Load> {
  const result = await autocannon({
    url: `${target.base}/small`,
    connections,
    duration: seconds,
    headers: { host: target.host },
  });
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx + result.timeouts,
  };
}

/**
 * Small GETs one at a time on one keep-alive connection for `seconds`, timed with
 * performance.now() (autocannon's percentiles are whole milliseconds, too coarse here).
 */
export async function sequential(target: Target, seconds: number): Promise<Load> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) {
    const started = performance.now();
    const status = await new Promise<number>((resolve, reject) => {
      http
        .get(`${target.base}/small`, { agent, headers: { host: target.host } }, (response) => {
          response.resume();
          response.on("end", () => resolve(response.statusCode!));
        })
        .on("error", reject);
    });
    times.push(performance.now() - started);
    if (status !== 200) errors++;
  }
  agent.destroy();
  const sorted = times.sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { rps: times.length / seconds, p50: at(0.5), p99: at(0.99), errors };
}

/** Downloads `size` bytes from /bytes/<size>: MB/s (10^6 bytes). */
export function download(target: Target, size: number): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    http
      .get(`${target.base}/bytes/${size}`, { headers: { host: target.host } }, (response) => {
        let length = 0;
        response.on("data", (chunk: Buffer) => {
          length += chunk.length;
        });
        response.on("end", () => {
          if (length !== size) return reject(new Error(`download got ${length} of ${size} bytes`));
          resolve(size / 1e6 / ((performance.now() - started) / 1000));
        });
        response.on("error", reject);
      })
      .on("error", reject);
  });
}

/** Uploads `size` bytes to /sink: MB/s. */
export function upload(target: Target, size: number): Promise<number> {
  const chunk = Buffer.alloc(1024 * 1024, 121);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const request = http.request(
      `${target.base}/sink`,
      { method: "POST", headers: { host: target.host, "content-length": size } },
      (response) => {
        let body = "";
        response.on("data", (data: Buffer) => {
          body += data;
        });
        response.on("end", () => {
          if (JSON.parse(body).length !== size) return reject(new Error(`upload: the sink got ${body}`));
          resolve(size / 1e6 / ((performance.now() - started) / 1000));
        });
      },
    );
    request.on("error", reject);
    let sent = 0;
    const write = () => {
      while (sent < size) {
        const piece = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += piece.length;
        if (!request.write(piece)) return void request.once("drain", write);
      }
      request.end();
    };
    write();
  });
}

/** Median round trip (ms) of `count` 32-byte WebSocket echoes, one at a time. */
export async function echo(target: Target, count: number): Promise<number> {
  const ws = new WebSocket(`${target.base.replace(/^http/, "ws")}/ws`, {
    headers: { host: target.host },
    perMessageDeflate: false,
  });
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const times: number[] = [];
  const payload = Buffer.alloc(32, 97);
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await new Promise<void>((resolve) => {
      ws.once("message", () => resolve());
      ws.send(payload);
    });
    times.push(performance.now() - started);
  }
  ws.close();
  return median(times);
}

/** Median time (ms) from sending a request for /sse to receiving its first event. */
export async function firstEvent(target: Target, count: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: true });
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    await new Promise<void>((resolve, reject) => {
      http
        .get(`${target.base}/sse`, { headers: { host: target.host }, agent }, (response) => {
          response.once("data", () => times.push(performance.now() - started));
          response.on("end", resolve);
          response.resume();
        })
        .on("error", reject);
    });
  }
  agent.destroy();
  return median(times);
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}
