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
  Ack: 12,
  Connect: 13,
  Open: 14,
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
  /** The connection never said hello within HELLO_TIMEOUT_MS. */
  HelloTimeout: 4004,
  /** The agent sent more frames or bytes per second than the relay allows (MAX_FRAMES_PER_SECOND...). */
  RateLimited: 4005,
  /**
   * The peer left more frames or bytes unacknowledged than a session keeps for it (see
   * unackedLimit): its session ended, and what it had in flight failed. Either side sends it.
   */
  Unacknowledged: 4006,
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
  /** The agent's token when the relay requires one, else "". Compared in constant time, stored only as a hash. */
  token: string;
  /**
   * On a relay without tokens: a secret the agent keeps (in a file per relay and name), so the
   * relay gives the name back to whoever holds it. Relays with tokens give a name to its token.
   */
  claim: string;
  /** Who may visit: enforced by the relay before a visitor's request costs the agent a frame. */
  rules: VisitorRules;
  /**
   * Going on with the session a previous connection carried (its streams survive the cut):
   * the id the relay's Ready gave it, and how many of the relay's frames the agent received.
   * Null for a new session. See FrameSession.
   */
  resume: { session: string; received: number } | null;
  /**
   * The tunnel carries TCP streams (`agent --tcp`): visitors reach it with `agent connect`
   * (Connect, then Open per connection), never with HTTP. Absent (false) in hellos of agents before it.
   */
  tcp?: boolean;
  /**
   * A TCP tunnel asks for a public port (`--public-port`) on a relay that gives them (a
   * self-hosted relay's --tcp-ports): plain clients then reach it with no key, as far as its
   * --allow-ip lets them. Absent (false): the tunnel is reached with `agent connect` only.
   */
  publicPort?: boolean;
}

/**
 * Visitor rules an agent sets for its tunnel (protocol 2). Each kind that is set must pass;
 * within a kind, any entry may match. Empty lists: no rule of that kind.
 */
export interface VisitorRules {
  /** {@link hashBasicCredentials} of each allowed user:password; the relay never sees a password. */
  basicAuth: string[];
  /** CIDR ranges (IPv4 or IPv6, a bare address is /32 or /128) a visitor's address must fall in. */
  allowIp: string[];
  /** Request signatures: a request must carry a valid HMAC-SHA256 of its raw body in one of these. */
  webhooks: WebhookRule[];
  /**
   * TCP tunnels: {@link hashConnectKey} of each key a visitor's Connect may carry; the relay
   * never sees a key it did not get from a visitor. Empty on an HTTP tunnel. A TCP tunnel with
   * none is reachable by no `connect` (only by a self-hosted relay's public port, if any).
   */
  connectKeys?: string[];
}

/**
 * An HMAC-SHA256 signature over the raw body, hex, in `header`; "github" is `X-Hub-Signature-256`
 * with its `sha256=` prefix. The relay holds `secret` while the agent is connected.
 */
export interface WebhookRule {
  kind: "github" | "hmac-sha256";
  /** Lowercase header name. */
  header: string;
  secret: string;
}

/** Relay -> agent: the tunnel is up. */
export interface ReadyFrame {
  type: typeof FrameType.Ready;
  name: string;
  /**
   * The public URL visitors use. For a TCP tunnel that a self-hosted relay gave a public port
   * (--tcp-ports), `tcp://HOST:PORT`: plain clients reach it there, with no `connect`.
   */
  url: string;
  /** The relay has no tokens: anyone who can reach it may open tunnels (the agent says so). */
  open: boolean;
  /** The session this connection carries: the id to resume it with after a cut. */
  session: string;
  /** True when the hello's resume was accepted: streams go on, frames after `received` are sent again. */
  resumed: boolean;
  /** Frames of the session the relay received from the agent (when resumed). */
  received: number;
  /**
   * The relay took the hello's `tcp`: it carries this tunnel's TCP streams (a relay that
   * predates TCP tunnels leaves it out, and the agent says the relay needs an upgrade). On a
   * Ready for a Connect: true.
   */
  tcp?: boolean;
  /**
   * Something the agent's user should know about the tunnel, printed as a warning ("" none):
   * a self-hosted relay with --tcp-ports that has no port free for it, say. At most
   * MAX_MESSAGE_LENGTH characters; an older agent ignores it.
   */
  notice?: string;
}

/**
 * Why a relay refused an agent. Stable strings; the agent decides from them whether to retry.
 * A newer relay may send codes not listed here: agents treat those as final.
 */
export type RefusalCode =
  /** The two sides speak different protocol versions; the message says which to upgrade. */
  | "version-mismatch"
  /** Missing or wrong token. */
  | "unauthorized"
  /** Open relay: another agent holds the name, for the seconds the message gives (retry if it was ours). */
  | "name-taken"
  /**
   * Open relay: another agent with the same claim (the same user's claim file: another agent
   * of this user on this machine) holds the name on a connection that still answers. Final.
   */
  | "name-in-use"
  /** The name belongs to another token (for NAME_TTL_DAYS after its last use). */
  | "name-owned"
  /** The name is one the relay keeps for itself (see RESERVED_NAMES). */
  | "name-reserved"
  /** This token already holds as many tunnels as the relay allows. */
  | "too-many-tunnels"
  /** Too many connection attempts from this address; retry later. */
  | "rate-limited"
  /** A tunnel's further connection (`--connections`) before its first is up: retry later. */
  | "shard-waiting"
  /** The hello itself is wrong (first frame, name, rules). */
  | "bad-hello"
  /** Connect: no agent serves this tunnel now (it never connected, or left). */
  | "agent-offline"
  /** Connect: the tunnel is an HTTP tunnel; it has no TCP service to connect to. */
  | "not-tcp"
  /** Connect: the visitor's address is outside the tunnel's --allow-ip ranges. */
  | "forbidden";

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
 * - `too-many-streams`: the relay refused a TCP stream past MAX_STREAMS_PER_TUNNEL or a visitor's share.
 * A newer peer may send codes not listed here: receivers treat those as `origin-error`.
 */
export type ResetCode = "origin-unreachable" | "origin-error" | "cancelled" | "protocol-error" | "too-many-streams";

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

/**
 * Either direction, within a session: the sender has received `received` frames of the
 * session from the other side, which may stop keeping them for a resend (see FrameSession).
 */
export interface AckFrame {
  type: typeof FrameType.Ack;
  received: number;
}

/**
 * Visitor's `agent connect` -> relay, the first message on its connection (outside any
 * session, like Hello): it asks for the TCP service of tunnel `name`. Its first two fields never
 * change shape. The relay answers Ready (then Open, Data, End, Reset and Credit per TCP
 * connection, in a session that survives a cut like an agent's) or Refused.
 */
export interface ConnectFrame {
  type: typeof FrameType.Connect;
  /** {@link PROTOCOL_VERSION} of the visitor's software. */
  version: number;
  /** The visitor's software and version, for logs. */
  client: string;
  /** The tunnel's name. */
  name: string;
  /** One of the keys the tunnel's owner handed out (see VisitorRules.connectKeys); "" for none. */
  key: string;
  /** Going on with a session after a cut, as in HelloFrame. */
  resume: { session: string; received: number } | null;
}

/**
 * Starts TCP connection `stream` of a TCP tunnel. Visitor -> relay: a client connected (the
 * visitor's stream id, its own). Relay -> agent: connect to the tunnel's one target (the
 * relay's stream id). Bytes follow both ways as Data within Credit, as bodies do; End is a
 * half-close of that direction (the peer reads EOF, the other direction goes on); Reset aborts
 * both. The stream ends when both directions ended or either side reset it. No answer frame:
 * an agent that cannot reach its target resets the stream (`origin-unreachable`).
 */
export interface OpenFrame {
  type: typeof FrameType.Open;
  stream: number;
  /** Relay -> agent: the visitor's address as the relay saw it, for the agent's log ("" unknown). Visitor -> relay: "". */
  from: string;
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
  | WsCloseFrame
  | AckFrame
  | ConnectFrame
  | OpenFrame;
