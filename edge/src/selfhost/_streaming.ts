/**
 * TunnelHost.streamingResponse in one process: a TransformStream whose readable end is the
 * response's body. With a length, the response says Content-Length, and a body that ends short
 * (the origin died mid-body) errors the stream, so the server aborts the response rather than
 * ending it cleanly: the visitor sees a truncated transfer, never a complete-looking short one
 * (Workers' FixedLengthStream does the same on Cloudflare).
 */
export function streamingResponse(
  status: number,
  headers: Headers,
  length: number | undefined,
): { response: Response; writable: WritableStream<Uint8Array> } {
  if (length === undefined) {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    return { response: new Response(readable, { status, headers }), writable };
  }
  headers.set("content-length", String(length));
  let written = 0;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      written += chunk.byteLength;
      if (written > length) {
        controller.error(new Error(`the body is longer than its Content-Length, ${length}`));
        return;
      }
      controller.enqueue(chunk);
    },
    flush(controller) {
      if (written < length) controller.error(new Error(`the body ended after ${written} of ${length} bytes`));
    },
  });
  return { response: new Response(readable, { status, headers }), writable };
}

/** The bytes of each Response that wholeResponse made, for a server that writes them itself. */
const wholeBodies = new WeakMap<Response, Uint8Array>();

/** TunnelHost.wholeResponse: the bytes as they are (the adapters add no Content-Encoding of their own). */
export function wholeResponse(status: number, headers: Headers, body: Uint8Array): Response {
  const response = new Response(body as Uint8Array<ArrayBuffer>, { status, headers });
  wholeBodies.set(response, body);
  return response;
}

/**
 * The whole body of a Response that wholeResponse made, unread: node.ts writes it to the
 * socket in one call instead of reading the body stream chunk by chunk, a promise each. A
 * Response the core rewrapped (a prefix's cookies, say) is another object: undefined.
 */
export function wholeBody(response: Response): Uint8Array | undefined {
  return response.bodyUsed ? undefined : wholeBodies.get(response);
}
