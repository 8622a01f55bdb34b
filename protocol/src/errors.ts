/** Why a frame could not be decoded. Stable strings: peers log them and tests match them. */
export type ProtocolErrorCode = "malformed-frame" | "frame-too-large";

/**
 * Raised by the codec for bytes that are not a valid frame. The message names the field and
 * the value or limit at fault; the connection that sent it may be closed, the receiver goes on.
 */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  readonly code: ProtocolErrorCode;
  /** Set when the bad frame named a readable stream: the error is that stream's alone. */
  stream?: number;

  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** @throws {ProtocolError} always, with code "malformed-frame". */
export function malformed(message: string): never {
  throw new ProtocolError("malformed-frame", message);
}
