import { concatBytes } from "@burrow/protocol";
import { EdgeError, isTeardownNoise } from "./errors.ts";
import { ByteBudget, type RelayLimits, SIGNED_BODIES_BUDGET, SIGNED_BODY_GRACE_MS } from "./limits.ts";
import { checkShare, Tally } from "./shares.ts";

// Bodies the relay reads whole before it checks them (a webhook's signature covers the raw
// body), until their check is done. Anyone who knows a tunnel's URL can send a well-formed but
// wrong signature and then trickle the body, so these bodies are kept apart: a pool of their
// own (never the stream slots that verified requests need), a share of it per visitor, a
// deadline and a minimum rate, and a bound on the bytes held. Runtime-free.

type BodyLimits = Pick<
  RelayLimits,
  "maxSignedBody" | "maxSignedBodies" | "maxSignedBodiesPerVisitor" | "signedBodyTimeoutMs" | "minSignedBodyRate"
>;

const PREFIX = "This tunnel checks request signatures, so it reads bodies whole first:";

export class SignedBodies {
  /** Bytes held, from the first byte read until the body is forwarded or refused. */
  private readonly bytes = new ByteBudget(SIGNED_BODIES_BUDGET);
  /** Bodies being read, by visitor. */
  private readonly reading = new Tally();

  constructor(private readonly limits: BodyLimits) {}

  /** Bodies being read now. */
  get count(): number {
    return this.reading.total;
  }

  /**
   * Reads a body that must be checked whole before any of it goes on. Its bytes stay taken
   * from the tunnel's budget until give().
   * @param visitor whom it counts for (see visitorKey).
   * @throws {EdgeError} 413 body-too-large past maxSignedBody (said before reading when
   *   declared); 503 too-many-streams when the tunnel reads maxSignedBodies bodies or holds
   *   SIGNED_BODIES_BUDGET bytes; 503 too-many-from-address past the visitor's share; 408
   *   body-too-slow past the deadline or below the minimum rate.
   */
  async read(
    body: ReadableStream<Uint8Array> | null,
    declared: number | undefined,
    visitor: string | undefined,
  ): Promise<Uint8Array> {
    const { maxSignedBody: limit } = this.limits;
    if (declared !== undefined && declared > limit) {
      // Said without reading it; cancelling lets the runtime close the visitor's connection
      // instead of leaving the unread body in the way of its next request.
      await body?.cancel().catch(() => {});
      throw new EdgeError(413, "body-too-large", `${PREFIX} this one is ${declared} bytes; the limit is ${limit} bytes.`);
    }
    if (!body) return new Uint8Array(0);
    try {
      this.enter(visitor);
    } catch (error) {
      await body.cancel().catch(() => {});
      throw error;
    }
    try {
      return await this.paced(body);
    } finally {
      this.reading.remove(visitor);
    }
  }

  /** The bytes of a body read by read() are no longer held. */
  give(bytes: number): void {
    this.bytes.give(bytes);
  }

  private enter(visitor: string | undefined): void {
    const { maxSignedBodies, maxSignedBodiesPerVisitor } = this.limits;
    if (this.reading.total >= maxSignedBodies) {
      throw new EdgeError(
        503,
        "too-many-streams",
        `${PREFIX} it is reading ${this.reading.total} bodies, its limit (MAX_SIGNED_BODIES); retry in a moment.`,
        { "Retry-After": "1" },
      );
    }
    checkShare(visitor, this.reading.of(visitor), maxSignedBodiesPerVisitor, "request bodies in check");
    this.reading.add(visitor);
  }

  /**
   * Reads `body` whole, failing it once it is late: allowed min(deadline, grace + bytes read /
   * rate) from its start, the way Apache's mod_reqtimeout paces bodies. One timer per body,
   * looked at again only when it fires, so a fast body costs nothing per chunk.
   */
  private async paced(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
    const { maxSignedBody: limit, signedBodyTimeoutMs: deadline, minSignedBodyRate: rate } = this.limits;
    const started = Date.now();
    let size = 0;
    const byRate = () => SIGNED_BODY_GRACE_MS + (size / rate) * 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      const look = () => {
        const allowed = Math.min(deadline, byRate());
        const now = Date.now();
        if (now - started < allowed) {
          timer = setTimeout(look, started + allowed - now);
          return;
        }
        const seconds = ((now - started) / 1000).toFixed(1);
        reject(
          byRate() < deadline
            ? new EdgeError(
                408,
                "body-too-slow",
                `${PREFIX} this one came too slowly (${size} bytes in ${seconds}s; after ${SIGNED_BODY_GRACE_MS / 1000}s a body must keep up ${rate} bytes a second, MIN_SIGNED_BODY_BYTES_PER_SECOND).`,
              )
            : new EdgeError(
                408,
                "body-too-slow",
                `${PREFIX} this one was not whole within ${deadline / 1000}s, the limit (SIGNED_BODY_SECONDS).`,
              ),
        );
      };
      timer = setTimeout(look, Math.min(deadline, byRate()));
    });
    late.catch(() => {}); // rejected after the body is whole: nobody waits for it then
    const parts: Uint8Array[] = [];
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await Promise.race([reader.read(), late]);
        if (done) break;
        if (size + value.byteLength > limit) {
          throw new EdgeError(413, "body-too-large", `${PREFIX} this one is over ${limit} bytes; the limit is ${limit} bytes.`);
        }
        if (!this.bytes.take(value.byteLength)) {
          throw new EdgeError(
            503,
            "too-many-streams",
            `${PREFIX} it holds as many request bodies as it can (${SIGNED_BODIES_BUDGET} bytes); retry in a moment.`,
            { "Retry-After": "1" },
          );
        }
        size += value.byteLength;
        parts.push(value);
      }
    } catch (error) {
      this.bytes.give(size);
      await reader.cancel().catch(() => {});
      // A visitor who leaves mid-body breaks the read ("Network connection lost"): nobody is
      // there to read the answer, and it is no fault of the relay's to log.
      if (isTeardownNoise(error)) throw new EdgeError(400, "bad-request", "The request body broke off before its end.");
      throw error;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
    return concatBytes(parts, size);
  }
}
