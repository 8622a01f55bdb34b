import { EdgeError } from "./errors.ts";

// What each visitor holds of a tunnel, so that one address cannot take all of it: idle
// WebSockets, requests whose visitors left before the origin answered (workerd does not tell
// the relay; the stream is held until the origin answers or RESPONSE_TIMEOUT_SECONDS), bodies
// trickling in to be checked. Visitors are counted by visitorKey (cidr.ts). Runtime-free.

/** How many of something each visitor holds, and how many all of them hold together. */
export class Tally {
  private readonly counts = new Map<string, number>();
  private all = 0;

  get total(): number {
    return this.all;
  }

  /** What `visitor` holds; 0 for an unknown address, which is never counted apart. */
  of(visitor: string | undefined): number {
    return visitor === undefined ? 0 : (this.counts.get(visitor) ?? 0);
  }

  add(visitor: string | undefined): void {
    this.all++;
    if (visitor !== undefined) this.counts.set(visitor, this.of(visitor) + 1);
  }

  /** One fewer for `visitor`; nothing for one that holds nothing (the total stays true). */
  remove(visitor: string | undefined): void {
    if (visitor !== undefined && this.of(visitor) === 0) return;
    this.all = Math.max(0, this.all - 1);
    if (visitor === undefined) return;
    const left = this.of(visitor) - 1;
    if (left > 0) this.counts.set(visitor, left);
    else this.counts.delete(visitor); // an entry per visitor only while it holds something
  }
}

/**
 * Refuses a visitor that holds its share of something already. A relay that cannot tell
 * addresses (`visitor` undefined) cannot tell visitors apart either, and leaves the share out.
 * @param what what is held, as the message says it: "requests and WebSockets open".
 * @throws {EdgeError} 503 too-many-from-address, with Retry-After.
 */
export function checkShare(visitor: string | undefined, held: number, share: number, what: string): void {
  if (visitor === undefined || held < share) return;
  throw new EdgeError(
    503,
    "too-many-from-address",
    `Your address holds ${held} of this tunnel's ${what}, the most one address may (MAX_STREAMS_PER_VISITOR: ${share}), so that others can reach the tunnel too; retry once one of yours ends.`,
    { "Retry-After": "1" },
  );
}
