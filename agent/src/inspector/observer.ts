import type { HeaderList, RequestHeadFrame } from "@burrow/protocol";

// What the forwarding code tells a watcher. With no observer (`--inspect false`) the forwarder
// makes no call and no copy: each hook is behind one `watch?.`.

/** Watches one HTTP exchange, as the forwarder sees it. */
export interface ExchangeWatch {
  /** Request body bytes from the relay (a view: copy what you keep). */
  requestData(bytes: Uint8Array): void;
  requestEnd(): void;
  responseHead(status: number, headers: HeaderList): void;
  /** Response body bytes from the origin (a view: copy what you keep). */
  responseData(bytes: Uint8Array): void;
  responseEnd(): void;
  /** Reset by either side, or failed at the origin; nothing follows. */
  fail(code: string, message: string): void;
}

/** Watches one visitor WebSocket. */
export interface SocketWatch {
  /** The origin's answer to the upgrade: 101, or a refusal. */
  open(status: number, headers: HeaderList): void;
  /** A piece of a message; `final` ends the message. */
  message(from: "visitor" | "origin", bytes: Uint8Array, binary: boolean, final: boolean): void;
  close(code: number, reason: string, by: "visitor" | "origin"): void;
  fail(code: string, message: string): void;
}

/** Told of every request and WebSocket a Forwarder starts; returns the watches, or none. */
export interface Observer {
  exchange(head: RequestHeadFrame): ExchangeWatch | undefined;
  socket(head: RequestHeadFrame): SocketWatch | undefined;
}
