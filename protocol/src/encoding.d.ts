// The WHATWG Encoding API, present in every runtime the protocol runs in (workerd, Node, Bun,
// Deno). Declared here because this package type-checks against ES2023 alone, without DOM.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean });
  decode(input?: Uint8Array): string;
}
