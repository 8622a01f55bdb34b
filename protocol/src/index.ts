/**
 * Burrow's wire protocol: the frames relay and agent exchange over one WebSocket, their
 * msgpack codec with limits for untrusted input, and the constants both sides share.
 * @module
 */
export { concatBytes, FrameBatch } from "./batch.ts";
export { closeReason, MAX_CLOSE_REASON_BYTES } from "./close.ts";
export { decodeFrame, decodeFrames, decodeMessage, encodeFrame, type InvalidFrame } from "./codec.ts";
export { ProtocolError, type ProtocolErrorCode } from "./errors.ts";
export { PIECE_OVERSHOOT, ReceiveWindow, SendCredit } from "./flow.ts";
export * from "./frames.ts";
export { HOP_BY_HOP } from "./http.ts";
export * from "./limits.ts";
export { attachSocket, type PipeEnd, type PipeSocket, TcpPipe } from "./pipe.ts";
export { decodePollAnswer, encodePollAnswer, MAX_POLL_ANSWER, type PollAnswer, TAKE_PARAM } from "./poll.ts";
export { hashBasicCredentials, hashConnectKey, randomId, sameBytes } from "./secrets.ts";
export { ACK_DELAY_MS, FrameSession } from "./session.ts";
