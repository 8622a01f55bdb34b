// The WHATWG Encoding API and Web Crypto, present in every runtime the protocol runs in (workerd, Node, Bun,
// Deno). Declared here because this package type-checks against ES2023 alone, without DOM.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean });
  decode(input?: Uint8Array): string;
}
// Web Crypto's digest and random values, as far as secrets.ts uses them.
declare const crypto: {
  subtle: { digest(algorithm: "SHA-256", data: Uint8Array): Promise<ArrayBuffer> };
  getRandomValues<T extends Uint8Array>(array: T): T;
};
// Base64 of a binary string (secrets.ts randomId), in every runtime since Node 16.
declare function btoa(data: string): string;
// Timers, present in every runtime the protocol runs in (FrameSession's delayed Ack).
declare function setTimeout(callback: () => void, ms: number): unknown;
declare function clearTimeout(timer: unknown): void;
