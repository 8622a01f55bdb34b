import http from "node:http";

export interface InspectorAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, checked by each test
  json: any;
}

/** Calls the inspector at 127.0.0.1:`port`, with the Host a browser on this machine would send. */
export function inspector(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<InspectorAnswer> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  const headers: Record<string, string> = {
    host: `127.0.0.1:${port}`,
    ...(body === undefined ? {} : { "content-type": "application/json" }),
    ...options.headers,
  };
  return new Promise((resolve, reject) => {
    const request = http.request({ host: "127.0.0.1", port, path, method: options.method ?? "GET", headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: response.statusCode!, headers: response.headers, text, json });
      });
    });
    request.on("error", reject);
    request.end(body);
  });
}

/** Polls the list until `found` picks an entry out of it (the list follows the exchange's end). */
export async function entryWhere(
  port: number,
  // biome-ignore lint/suspicious/noExplicitAny: summaries from the API
  found: (entry: any) => boolean,
  timeoutMs = 10_000,
  // biome-ignore lint/suspicious/noExplicitAny: summaries from the API
): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { json } = await inspector(port, "/api/requests");
    const entry = (json as unknown[]).find(found);
    if (entry) return entry;
    if (Date.now() > deadline) throw new Error(`no such entry in the inspector's list: ${JSON.stringify(json).slice(0, 2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
