// A WebSocket close frame is a control frame: its payload is at most 125 bytes, two of them
// the close code, which leaves 123 bytes of UTF-8 for the reason (RFC 6455 sections 5.5 and
// 5.5.1). workerd's close() throws on a longer reason, `ws` throws too, and a hand-written
// sender that cuts the bytes blindly may split a character. Every close goes through this.

/** The most bytes of UTF-8 a close reason may take (RFC 6455 section 5.5). */
export const MAX_CLOSE_REASON_BYTES = 123;

const CUT = "...";

/**
 * `reason` as a close frame can carry it: whole when it fits in MAX_CLOSE_REASON_BYTES bytes of
 * UTF-8, otherwise cut at a character boundary (a surrogate pair stays whole) and ended with
 * "...", all within the limit. A lone surrogate counts as the 3 bytes of U+FFFD that every
 * UTF-8 encoder (TextEncoder, Buffer, workerd) writes for it.
 */
export function closeReason(reason: string): string {
  // Each UTF-16 unit is at most 3 bytes of UTF-8 (a pair of them, 4).
  if (reason.length * 3 <= MAX_CLOSE_REASON_BYTES) return reason;
  let bytes = 0;
  let fits = 0; // where the longest prefix that leaves room for CUT ends
  for (let i = 0; i < reason.length; ) {
    const unit = reason.charCodeAt(i);
    let units = 1;
    let size = 3;
    if (unit < 0x80) size = 1;
    else if (unit < 0x800) size = 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && (reason.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      size = 4;
      units = 2;
    }
    bytes += size;
    i += units;
    if (bytes > MAX_CLOSE_REASON_BYTES) return `${reason.slice(0, fits)}${CUT}`;
    if (bytes <= MAX_CLOSE_REASON_BYTES - CUT.length) fits = i;
  }
  return reason;
}
