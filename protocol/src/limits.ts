/** The protocol version both sides speak. Bumped only for changes an older peer cannot ignore. */
export const PROTOCOL_VERSION = 2;
// 2: Hello carries visitor rules and Ready says whether the relay is open. A relay of
// protocol 1 would ignore the rules, so it must refuse a protocol 2 agent (it does).

/**
 * Largest body chunk carried by one Data frame. Bodies always travel as many bounded chunks so
 * that one large body never holds the connection away from other streams.
 */
export const MAX_DATA_CHUNK = 64 * 1024;

/**
 * Body bytes each side may have in flight per stream and direction before the receiver grants
 * more with Credit frames. Bounds the memory a slow reader costs (relay and agent buffer at
 * most this much per stream) while leaving room for the round trip between agent and relay.
 */
export const INITIAL_WINDOW = 1024 * 1024;

/**
 * Receivers grant credit in batches of this many consumed bytes: fewer frames, and no trickle
 * of tiny Credit frames (each a small TCP segment, which Nagle's algorithm may hold back
 * behind the previous one). A sender with a full window left never waits for a batch.
 */
export const CREDIT_BATCH = INITIAL_WINDOW / 4;

/**
 * Streams a tunnel may have open at once unless its relay says otherwise: the default of the
 * relay's MAX_STREAMS_PER_TUNNEL. What a session may keep unacknowledged makes room for this
 * many streams' windows (see {@link unackedLimit}).
 */
export const DEFAULT_MAX_STREAMS = 100;

/**
 * What one open stream may leave unacknowledged in its sender's session: its window of body
 * bytes (flow control: a sender never has more in flight, and an honest receiver's Ack leads
 * the Credit that gives the window back, see FrameSession), one piece more (until issue 22 a
 * visitor WebSocket piece could overshoot its credit by up to a chunk, see PIECE_OVERSHOOT in
 * flow.ts; kept as headroom), and 64 KiB for its head and the frames
 * that end it (a request head is at most the relay's default MAX_REQUEST_HEAD_BYTES, 64 KiB).
 */
export const UNACKED_STREAM_BYTES = INITIAL_WINDOW + MAX_DATA_CHUNK + 64 * 1024;

/**
 * Frames one open stream may leave unacknowledged: its window in chunks of 1 KiB on average
 * (bodies travel as the chunks their sender read, from a socket usually 16-64 KiB; flow control
 * bounds their bytes, not their number), and 64 for its head, End, Reset and Credit frames.
 */
export const UNACKED_STREAM_FRAMES = INITIAL_WINDOW / 1024 + 64;

/**
 * Room beyond the open streams' share, for frames no window bounds: answers to the peer's own
 * frames (a Reset for a frame of a stream that just ended), Credit for what the peer sent, the
 * frames of streams that ended but whose frames the peer has not acknowledged yet. An honest peer
 * acknowledges within a round trip plus ACK_DELAY_MS, and across a cut what it missed is mostly
 * the streams' Data: this is headroom, which only a peer that never acknowledges uses up.
 */
export const UNACKED_CONTROL_BYTES = 4 * 1024 * 1024;

/** Frames of {@link UNACKED_CONTROL_BYTES}: about 100 bytes each (a Reset with its reason). */
export const UNACKED_CONTROL_FRAMES = 16 * 1024;

/** A hard bound on what one side of a session keeps for its peer until the peer acknowledges it. */
export interface UnackedLimit {
  /** Bytes of the messages kept (as sent, frames and payloads). */
  bytes: number;
  /** Frames kept (Acks are never kept). */
  frames: number;
}

/**
 * What a session may keep unacknowledged for its peer, for a tunnel of `streams` open streams at
 * most: each stream's share (window, head, closing frames) plus headroom for control frames. Past
 * it, the peer is not acknowledging what it receives (an honest one acknowledges within a round
 * trip, and every frame it is sent counts): the session ends and the connection closes with
 * CloseCode.Unacknowledged, and what was kept is let go. For 100 streams: 116.5 MiB and
 * 125,184 frames, what flow control already lets the open streams' Data hold.
 */
export function unackedLimit(streams: number = DEFAULT_MAX_STREAMS): UnackedLimit {
  return {
    bytes: streams * UNACKED_STREAM_BYTES + UNACKED_CONTROL_BYTES,
    frames: streams * UNACKED_STREAM_FRAMES + UNACKED_CONTROL_FRAMES,
  };
}

/** Largest visitor WebSocket message carried through a tunnel, in either direction. */
export const MAX_WS_MESSAGE = 32 * 1024 * 1024;

/**
 * A side's frames leave as one WebSocket message until they reach this size (see FrameBatch):
 * four Data chunks a message. Measured on workerd with a Node agent, 500 MB each way: 64 KiB
 * messages 313-356 MB/s down and ~240 up, 256 KiB 352-420 down and 326-348 up, 512 KiB
 * 302-371 down and 267-283 up (a message then holds half the stream's window).
 */
export const BATCH_FLUSH_BYTES = 4 * MAX_DATA_CHUNK;

/** Largest encoded frame either side accepts. Head frames are the large ones (many headers). */
export const MAX_FRAME_BYTES = 256 * 1024;

/**
 * Largest WebSocket message either side accepts: frames sent in the same turn travel together
 * (see FrameBatch), a batch is flushed once it reaches BATCH_FLUSH_BYTES, and no single frame
 * exceeds MAX_FRAME_BYTES. Far below the 32 MiB a Durable Object accepts per message.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** Most header lines in one request or response head. */
export const MAX_HEADERS = 256;

/** Longest header name plus value, and longest path, in bytes of UTF-16 code units. */
export const MAX_HEADER_BYTES = 32 * 1024;

/** Longest message in Refused and Reset frames. */
export const MAX_MESSAGE_LENGTH = 1024;

/** Highest stream id; ids are unsigned 32-bit and never reused within one connection. */
export const MAX_STREAM_ID = 0xffff_ffff;

/**
 * Highest stream id a visitor's `agent connect` gives its TCP streams (Open): ids 1 to this,
 * taken again once free. The relay maps them into a block of the agent's ids of its own, so
 * that the mapping survives the relay's hibernation without being stored.
 */
export const MAX_CONNECT_STREAM_ID = 0xf_ffff;

/**
 * Tunnel names are single DNS labels so that `<name>.<base domain>` is a valid hostname:
 * lowercase letters, digits and inner hyphens, 1 to 63 characters (RFC 1035 section 2.3.4).
 */
export const TUNNEL_NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Tunnel names that start with this are IDNA A-labels (RFC 5890 section 2.3.2.1): a browser
 * shows `xn--80ak6aa92e` as `аррӏе` (Cyrillic), a look-alike of `apple`. Relays refuse them
 * unless their operator allows them (the relay's ALLOW_PUNYCODE_NAMES).
 */
export const PUNYCODE_PREFIX = "xn--";

/** True for a tunnel name that is a punycode label (see PUNYCODE_PREFIX), in any case. */
export function isPunycodeName(name: string): boolean {
  return name.slice(0, PUNYCODE_PREFIX.length).toLowerCase() === PUNYCODE_PREFIX;
}

/**
 * Names the relay keeps for itself: its own paths and the labels people expect a service to
 * own, which a tunnel could otherwise use to impersonate it (`admin.<base>`, `api.<base>`).
 */
export const RESERVED_NAMES: ReadonlySet<string> = new Set([
  "_burrow",
  "burrow",
  "relay",
  "t",
  "www",
  "api",
  "admin",
  "administrator",
  "root",
  "mail",
  "smtp",
  "ftp",
  "ns",
  "ns1",
  "ns2",
  "dns",
  "status",
  "health",
  "login",
  "auth",
  "account",
  "accounts",
  "billing",
  "dashboard",
  "console",
  "support",
  "help",
  "docs",
  "static",
  "cdn",
  "assets",
  "localhost",
]);

/** Most rules of each kind in a Hello (Basic credentials, CIDR ranges, webhook secrets). */
export const MAX_RULES = 16;

/** Path on the relay where agents open their WebSocket, with `?name=<tunnel name>`. */
export const CONNECT_PATH = "/_burrow/connect";

/**
 * The `role` query value of a connect URL (and of an HTTPS-transport session's opening POST)
 * that makes it a visitor's `agent connect`, not an agent: the relay expects a Connect frame
 * on it. A relay from before TCP tunnels ignores the query and refuses the Connect as a bad hello.
 */
export const CONNECTOR_ROLE = "connect";

/**
 * Path on the relay that says what it is, for `agent doctor`: `GET INFO_PATH` answers a
 * {@link RelayInfo} as JSON. Something else at the relay's URL (a login page, another site)
 * answers otherwise, and an agent can tell before it dials in.
 */
export const INFO_PATH = "/_burrow/info";

/** The answer at {@link INFO_PATH}. Fields are only ever added. */
export interface RelayInfo {
  /** Always true: marks the answer as a Burrow relay's. */
  burrow: true;
  /** The {@link PROTOCOL_VERSION} the relay speaks; it refuses agents of any other. */
  protocol: number;
  /**
   * The relay carries TCP tunnels (`agent --tcp`, `agent connect`); absent from relays before
   * them, which refuse a visitor's Connect as a bad hello (see CONNECTOR_ROLE).
   */
  tcp?: true;
}

/**
 * The HTTPS transport, for networks that block WebSockets: `POST SESSION_PATH?name=<tunnel>`
 * opens a session (with `Authorization: Bearer <token>` on a relay with tokens; answer:
 * `{"session": id}`). Every later request names the session in the SESSION_HEADER header, never
 * in the URL (URLs end up in logs, and the id is as good as the connection): `POST` carries
 * agent -> relay frames in bounded bodies (at most MAX_MESSAGE_BYTES, `?seq=<n>` numbered so
 * that a retried POST is applied once), `GET ?ack=<n>&wait=<ms>` long-polls relay -> agent
 * frames (a PollAnswer, numbered: acknowledging n releases batch n, asking again with n - 1
 * gets it again), and `DELETE ?code=<c>&reason=<r>` closes it.
 */
export const SESSION_PATH = "/_burrow/session";

/** The request header that names an HTTPS-transport session (see SESSION_PATH). */
export const SESSION_HEADER = "burrow-session";

/** Longest the relay holds a poll open with nothing to send (below common proxy idle limits). */
export const MAX_POLL_WAIT_MS = 25_000;

/**
 * Heartbeats are text messages outside the msgpack framing, on purpose: the relay answers
 * them with `setWebSocketAutoResponse`, which replies without waking a hibernated Durable
 * Object, so an idle tunnel costs nothing. Every other message is binary msgpack.
 */
export const HEARTBEAT = { ping: "burrow:ping", pong: "burrow:pong" } as const;

/**
 * Connections one agent may open for a tunnel (`--connections`), each to its own Durable
 * Object of the tunnel, its shard: shard 0 holds the name, the owner and the rules.
 */
export const MAX_CONNECTIONS = 16;

/**
 * Bytes of a proxy's 407 body the agent reads and discards to answer the challenge on the same
 * connection (NTLM's must be; squid's page is ~4 KiB). A larger body is not read: the agent
 * starts again on a new connection instead.
 */
export const MAX_PROXY_AUTH_BODY = 64 * 1024;

/**
 * 407s one proxy connection may answer before the agent gives up: NTLM needs two, Digest two
 * (three with a stale nonce). More is a proxy going round in circles.
 */
export const MAX_PROXY_AUTH_ROUNDS = 4;

/**
 * Connections one dial may open to a proxy that closes them mid-handshake. Each new connection
 * starts NTLM or Negotiate over; never a loop (accounts are locked after a few bad tries).
 */
export const MAX_PROXY_AUTH_CONNECTIONS = 3;

/**
 * Requests carrying credentials one dial may send a proxy (a Basic header sent again on a new
 * connection, an NTLM handshake started over): accounts get locked after a few bad tries.
 */
export const MAX_PROXY_AUTH_ATTEMPTS = 2;

/**
 * Largest PAC file the agent reads (--proxy-pac, WPAD). Corporate PAC files are a few KB to a
 * few hundred KB (long lists of domains); anything larger is refused before it is evaluated.
 */
export const MAX_PAC_BYTES = 2 * 1024 * 1024;

/**
 * Time one evaluation of a PAC file's FindProxyForURL may run in its sandbox (QuickJS's
 * interrupt handler stops it): a PAC that loops forever costs this, then an error naming it.
 */
export const PAC_TIME_LIMIT_MS = 2_000;

/** Memory the PAC sandbox (one QuickJS runtime) may allocate; far above what a PAC needs. */
export const PAC_MEMORY_LIMIT = 32 * 1024 * 1024;

/**
 * A PAC's dnsResolve/isResolvable/isInNet lookups, each bounded by this (the runtime's resolver
 * has no timeout of its own: glibc's default is 5 s per server and attempt); a name that does
 * not answer in time counts as not resolvable, as in browsers.
 */
export const PAC_DNS_TIMEOUT_MS = 2_000;

/** Distinct names one evaluation may look up: each costs a re-run of FindProxyForURL (sandbox.ts). */
export const PAC_MAX_LOOKUPS = 8;

/**
 * WPAD's look for http://wpad/wpad.dat: the name lookup and the fetch together. Short, because
 * on a network without WPAD every start of `--proxy auto` waits this long before going direct.
 */
export const WPAD_TIMEOUT_MS = 3_000;

/**
 * Most entries `agent --dir` lists on the page of a folder without an index.html; a line says
 * how many more there are. Each listed entry costs a stat() and about 250 bytes of HTML, so a
 * folder of a million files makes a page of about 250 KB instead of hundreds of megabytes and a
 * million stat() calls per visit; the names beyond it are counted, never held.
 */
export const MAX_LISTED_ENTRIES = 1000;

/**
 * The relay's default for NAME_TTL_DAYS (edge/src/limits.ts): a name unused this long returns
 * to the pool. Agents use it too, to forget their claim files (agent/src/claims.ts): they cannot
 * read a relay's own setting, and on an open relay a claim only counts while its agent is
 * connected and for a minute after, so any age far past that is safe to forget.
 */
export const DEFAULT_NAME_TTL_DAYS = 7;
