/**
 * Wire values of frame types: never renumber or reuse, only append. Receivers ignore types
 * they do not know, so a newer peer may send more.
 */
export const FrameType = {
  Hello: 1,
  Ready: 2,
  Refused: 3,
  RequestHead: 4,
  ResponseHead: 5,
  Data: 6,
  End: 7,
  Reset: 8,
  Credit: 9,
  WsMessage: 10,
  WsClose: 11,
} as const;

/**
 * WebSocket close codes with a Burrow meaning (4000-4999 is the application range, RFC 6455
 * section 7.4.2). Reasons stay under 123 bytes; 1005, 1006 and 1015 are never sent.
 */
export const CloseCode = {
  /** The agent stopped on purpose: the relay releases its name at once. */
  Normal: 1000,
  /** The relay refused the hello; a Refused frame said why. */
  Refused: 4000,
  /** A newer connection from the same agent took over the tunnel. */
  Replaced: 4001,
  /** The peer sent a frame that broke the protocol; the reason names it. */
  ProtocolError: 4002,
  /** The agent heard nothing from the relay for too long and gave up on this connection. */
  HeartbeatTimeout: 4003,
} as const;

/** One of the values of {@link FrameType}. */
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** An ordered, repeatable header list (two Set-Cookie lines stay two entries). */
export type HeaderList = [name: string, value: string][];

/**
 * Agent -> relay, the first message on a connection. Its first two fields never change
 * shape, so a relay of any version can read the version and say who should upgrade.
 */
export interface HelloFrame {
  type: typeof FrameType.Hello;
  /** {@link PROTOCOL_VERSION} of the agent. */
  version: number;
  /** The agent's own version, for logs. */
  agent: string;
  /** Requested tunnel name (a DNS label). */
  name: string;
  /** The relay's shared token when it requires one, else "". */
  token: string;
  /** A secret the agent keeps for its whole life: the relay gives the name back to whoever holds it. */
  claim: string;
}

/** Relay -> agent: the tunnel is up. */
export interface ReadyFrame {
  type: typeof FrameType.Ready;
  name: string;
  /** The public URL visitors use. */
  url: string;
}

/**
 * Why a relay refused an agent. Stable strings; the agent decides from them whether to retry.
 * A newer relay may send codes not listed here: agents treat those as final.
 */
export type RefusalCode = "version-mismatch" | "unauthorized" | "name-taken" | "bad-hello";

/** Relay -> agent: the tunnel was refused; the relay closes the socket after sending it. */
export interface RefusedFrame {
  type: typeof FrameType.Refused;
  code: RefusalCode;
  /** A sentence for the person running the agent, with what to do. */
  message: string;
}

/** Relay -> agent: a visitor request starts stream `stream`; its body follows as Data then End. */
export interface RequestHeadFrame {
  type: typeof FrameType.RequestHead;
  /** Unique per agent connection, chosen by the relay. */
  stream: number;
  method: string;
  /** Path and query, never an absolute URL: the agent only ever talks to its own origin. */
  path: string;
  headers: HeaderList;
}

/** Agent -> relay: the origin answered stream `stream`; its body follows as Data then End. */
export interface ResponseHeadFrame {
  type: typeof FrameType.ResponseHead;
  stream: number;
  status: number;
  headers: HeaderList;
}

/** Either direction: one chunk of a body, at most {@link MAX_DATA_CHUNK} bytes. */
export interface DataFrame {
  type: typeof FrameType.Data;
  stream: number;
  bytes: Uint8Array;
}

/** Either direction: the body of `stream` in that direction is complete. */
export interface EndFrame {
  type: typeof FrameType.End;
  stream: number;
}

/**
 * Why a stream was reset. Stable strings: the relay renders some as visitor error pages.
 * - `origin-unreachable`: the agent could not connect to its local server.
 * - `origin-error`: the local server failed mid-request or mid-response.
 * - `cancelled`: the other side gave up (a visitor closed the tab).
 * - `protocol-error`: a frame for this stream broke the protocol.
 * A newer peer may send codes not listed here: receivers treat those as `origin-error`.
 */
export type ResetCode = "origin-unreachable" | "origin-error" | "cancelled" | "protocol-error";

/** Either direction: abandon `stream` in both directions; nothing more is sent for it. */
export interface ResetFrame {
  type: typeof FrameType.Reset;
  stream: number;
  code: ResetCode;
  message: string;
}

/**
 * Either direction: the receiver of a body (or of WebSocket messages) has consumed `bytes` more
 * of it, so the sender may put that many more in flight. Each stream starts with
 * {@link INITIAL_WINDOW} bytes of credit in each direction; a sender never exceeds its credit.
 */
export interface CreditFrame {
  type: typeof FrameType.Credit;
  stream: number;
  bytes: number;
}

/**
 * Either direction, on a stream whose ResponseHead said 101: one piece of a WebSocket message.
 * Messages are cut into pieces of at most {@link MAX_DATA_CHUNK} bytes; the last has `final`.
 * Pieces count against the stream's credit like Data.
 */
export interface WsMessageFrame {
  type: typeof FrameType.WsMessage;
  stream: number;
  /** true for a binary message, false for text (UTF-8 bytes). */
  binary: boolean;
  final: boolean;
  bytes: Uint8Array;
}

/**
 * Either direction: that side's WebSocket closed with this code and reason (code 1005 when it
 * carried none, 1006 when the connection broke). The stream ends once both sides closed.
 */
export interface WsCloseFrame {
  type: typeof FrameType.WsClose;
  stream: number;
  code: number;
  reason: string;
}

/** Every frame either side sends. */
export type Frame =
  | HelloFrame
  | ReadyFrame
  | RefusedFrame
  | RequestHeadFrame
  | ResponseHeadFrame
  | DataFrame
  | EndFrame
  | ResetFrame
  | CreditFrame
  | WsMessageFrame
  | WsCloseFrame;
