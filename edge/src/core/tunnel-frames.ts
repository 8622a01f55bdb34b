import { CloseCode, decodeMessage, type Frame, FrameType, type InvalidFrame, ProtocolError } from "@burrow/protocol";
import { isTeardownNoise } from "./errors.ts";
import type { Link } from "./host.ts";
import { RateMeter } from "./limits.ts";
import type { AgentSession } from "./session.ts";
import type { Verdict } from "./streams.ts";
import { isTcpFrame } from "./tcp.ts";
import type { TunnelCore } from "./tunnel.ts";
import { endSession, hello } from "./tunnel-hello.ts";
import type { Attachment } from "./tunnel-state.ts";

/** One message of frames from an agent, on either transport. */
export async function fromAgent(t: TunnelCore, link: Link, message: Uint8Array): Promise<void> {
  if (t.ended.has(link)) return;
  const attachment = t.attachment(link) as Extract<Attachment, { phase: "hello" | "ready" }>;
  try {
    const counted = { frames: 0 };
    const frames = decodeMessage(message, counted);
    if (!withinRate(t, link, frames.length, message.byteLength)) return;
    if (attachment.phase === "ready") {
      const session = t.agent();
      if (session?.link !== link) return; // a link the session has left
      for (const frame of session.frames.take(frames, counted.frames)) {
        if (session.frames.ended) break; // it left too much unacknowledged (see use)
        receive(t, session, frame);
      }
      return;
    }
    // Only the first frame is a hello; what follows it in the same message is served if the
    // hello was accepted and dropped unread if not (a message packed with hellos costs one).
    const [first, ...rest] = frames;
    const judged = t.hellos.then(() => hello(t, link, first, attachment));
    t.hellos = judged.catch(() => undefined);
    const session = await judged;
    if (!session) return;
    for (const frame of session.frames.take(rest, counted.frames - 1)) {
      if (session.frames.ended) break;
      receive(t, session, frame);
    }
  } catch (error) {
    if (error instanceof ProtocolError) {
      console.warn(`tunnel ${attachment.name}: closing the agent's connection: ${error.message}`);
      t.close(link, CloseCode.ProtocolError, `protocol error: ${error.message}`);
      const session = t.current;
      if (session?.link === link) {
        endSession(t, session, `The agent for tunnel "${attachment.name}" broke the protocol: ${error.message}`);
      }
    } else if (!isTeardownNoise(error)) {
      console.error(`tunnel ${attachment.name}: a message from the agent failed`, error);
    }
  } finally {
    t.streams.settle();
  }
}

/** Counts an agent's message against the frame and byte rates; closes the link past them. */
export function withinRate(t: TunnelCore, link: Link, frames: number, bytes: number, who = "the agent's connection"): boolean {
  const now = Date.now();
  let meter = t.meters.get(link);
  if (!meter) {
    meter = {
      frames: new RateMeter(t.settings.maxFramesPerSecond, 2, now),
      bytes: new RateMeter(t.settings.maxBytesPerSecond, 2, now),
    };
    t.meters.set(link, meter);
  }
  const framesOk = meter.frames.take(frames, now);
  const bytesOk = meter.bytes.take(bytes, now);
  if (framesOk && bytesOk) return true;
  const what = framesOk
    ? `${t.settings.maxBytesPerSecond} bytes a second (MAX_AGENT_BYTES_PER_SECOND)`
    : `${t.settings.maxFramesPerSecond} frames a second (MAX_AGENT_FRAMES_PER_SECOND)`;
  const attachment = link.deserializeAttachment() as { name?: string } | null;
  console.warn(`tunnel ${attachment?.name}: closing ${who}: it sent more than ${what}`);
  t.close(link, CloseCode.RateLimited, `sent more than ${what}`);
  const session = t.current;
  if (session?.link === link) endSession(t, session, "The tunnel's agent sent faster than the relay allows.");
  return false;
}

/** One frame from a ready agent; a frame that breaks the protocol resets its stream only. */
export function receive(t: TunnelCore, socket: AgentSession, frame: Frame | InvalidFrame): void {
  let verdict: Verdict;
  // A TCP tunnel's streams pass through to their visitor (tcp.ts).
  if (frame.type !== "invalid" && isTcpFrame(frame) && t.tcp.carries(frame.stream)) {
    const violation = t.tcp.fromAgent(frame);
    if (violation === "gone") {
      if (frame.type === FrameType.Data || frame.type === FrameType.End) {
        t.sendFrame(socket, {
          type: FrameType.Reset,
          stream: frame.stream,
          code: "cancelled",
          message: "this stream is no longer open",
        });
      }
    } else if (violation) {
      const name = (socket.link?.deserializeAttachment() as { name?: string } | null | undefined)?.name;
      console.warn(`tunnel ${name}: stream ${frame.stream}: the agent broke the protocol: ${violation}`);
    }
    return;
  }
  switch (frame.type) {
    case "invalid":
      verdict = { violation: frame.error.message };
      break;
    case FrameType.ResponseHead:
      verdict = t.streams.head(frame, socket);
      break;
    case FrameType.Data:
      verdict = t.streams.data(frame.stream, socket, frame.bytes);
      break;
    case FrameType.End:
      verdict = t.streams.end(frame.stream, socket);
      break;
    case FrameType.Reset:
      t.streams.reset(frame.stream, socket, frame.code, frame.message);
      return; // a reset of a stream already gone needs no answer
    case FrameType.Credit: {
      verdict = t.streams.granted(frame.stream, socket, frame.bytes);
      if (verdict === "gone") verdict = t.sockets.granted(socket, frame.stream, frame.bytes);
      if (verdict === "gone") return; // credit may trail a stream that just ended
      break;
    }
    case FrameType.WsMessage:
      verdict = t.sockets.fromAgent(socket, frame);
      break;
    case FrameType.WsClose:
      t.sockets.closedByOrigin(frame);
      return; // the visitor may have closed first
    default:
      throw new ProtocolError("malformed-frame", `the relay does not accept a frame of type ${frame.type} from an agent`);
  }
  if (verdict === "ok") return;
  if (verdict === "gone") {
    // Frames for a stream the relay already finished (the visitor left) are expected while the
    // agent catches up with the Reset it was sent.
    t.sendFrame(socket, {
      type: FrameType.Reset,
      stream: frame.stream,
      code: "cancelled",
      message: "this stream is no longer open",
    });
    return;
  }
  const name = (socket.link?.deserializeAttachment() as { name?: string } | null | undefined)?.name;
  console.warn(`tunnel ${name}: stream ${frame.stream}: the agent broke the protocol: ${verdict.violation}`);
  if (t.streams.has(frame.stream)) t.streams.violated(frame.stream, verdict.violation);
  else {
    t.sockets.closedByOrigin({ type: FrameType.WsClose, stream: frame.stream, code: 1011, reason: "protocol error" });
    t.sendFrame(socket, { type: FrameType.Reset, stream: frame.stream, code: "protocol-error", message: verdict.violation });
  }
}
