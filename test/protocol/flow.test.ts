import { CREDIT_BATCH, INITIAL_WINDOW, MAX_DATA_CHUNK, PIECE_OVERSHOOT, ReceiveWindow, SendCredit } from "@burrow/protocol";
import fc from "fast-check";
import { describe, expect, it } from "vitest";

// One stream, one direction: a sender with its SendCredit, a receiver with its ReceiveWindow,
// and what travels between them in order (Data one way, Credit the other), as on the wire.

/** What the test may do next: the sender sends, the receiver consumes, a frame arrives. */
const step = fc.oneof(
  fc.record({ send: fc.integer({ min: 0, max: INITIAL_WINDOW / 2 }) }),
  fc.record({ consume: fc.integer({ min: 0, max: 4 * MAX_DATA_CHUNK }) }),
  fc.record({ deliverData: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ deliverCredit: fc.integer({ min: 1, max: 8 }) }),
);

describe("SendCredit", () => {
  it("gives what a stream's window allows and no more, then waits for a grant", () => {
    const credit = new SendCredit();
    expect(credit.available).toBe(INITIAL_WINDOW);
    expect(credit.take(MAX_DATA_CHUNK)).toBe(MAX_DATA_CHUNK);
    expect(credit.take(INITIAL_WINDOW)).toBe(INITIAL_WINDOW - MAX_DATA_CHUNK);
    expect(credit.take(1)).toBe(0);
    expect(credit.grant(10)).toBeUndefined();
    expect(credit.take(MAX_DATA_CHUNK)).toBe(10);
    expect(credit.take(0)).toBe(0);
  });

  it("calls credit past the window a violation, and does not count it", () => {
    const credit = new SendCredit();
    expect(credit.grant(11)).toBe(`credit of 11 bytes would exceed the ${INITIAL_WINDOW}-byte window`);
    expect(credit.available).toBe(INITIAL_WINDOW);
    credit.take(100);
    expect(credit.grant(100)).toBeUndefined();
    expect(credit.grant(1)).toMatch(/would exceed/);
  });
});

describe("ReceiveWindow", () => {
  it("credits nothing until a batch is consumed, then all of it", () => {
    const window = new ReceiveWindow();
    expect(window.receive(INITIAL_WINDOW)).toBeUndefined();
    expect(window.consume(CREDIT_BATCH - 1)).toBe(0);
    expect(window.pending).toBe(CREDIT_BATCH - 1);
    expect(window.consume(2)).toBe(CREDIT_BATCH + 1);
    expect(window.pending).toBe(0);
    // What came back may be sent again, and not a byte more.
    expect(window.receive(CREDIT_BATCH + 1)).toBeUndefined();
    expect(window.receive(1)).toBe("1 bytes arrived with credit for 0");
  });

  it("calls bytes past the window a violation as they arrive, before anything is consumed", () => {
    const window = new ReceiveWindow();
    expect(window.receive(INITIAL_WINDOW - 5)).toBeUndefined();
    expect(window.receive(6)).toBe("6 bytes arrived with credit for 5");
    // The refused bytes were not counted: the 5 allowed still are.
    expect(window.receive(5)).toBeUndefined();
  });

  it("lets a piece of an earlier peer overshoot by less than a chunk when told to", () => {
    const window = new ReceiveWindow(INITIAL_WINDOW, PIECE_OVERSHOOT);
    expect(window.receive(INITIAL_WINDOW - 1)).toBeUndefined();
    expect(window.receive(MAX_DATA_CHUNK)).toBeUndefined();
    expect(window.receive(1)).toMatch(/arrived with credit for 0/);
  });

  it("throws on consuming more than was received (a bug in its caller)", () => {
    const window = new ReceiveWindow();
    window.receive(10);
    expect(() => window.consume(11)).toThrow(RangeError);
  });
});

describe("a sender and a receiver on one stream", () => {
  it("never has more in flight than the window, and a receiver never sees an overrun", () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 20, maxLength: 300, size: "max" }), (steps) => {
        const credit = new SendCredit();
        const window = new ReceiveWindow();
        const data: number[] = [];
        const credits: number[] = [];
        let sent = 0;
        let granted = 0;
        let received = 0;
        let consumed = 0;
        let returned = 0;
        for (const next of steps) {
          if ("send" in next) {
            const size = credit.take(next.send);
            expect(size).toBeLessThanOrEqual(next.send);
            if (size > 0) data.push(size);
            sent += size;
          } else if ("consume" in next) {
            const size = Math.min(next.consume, received - consumed);
            consumed += size;
            const back = window.consume(size);
            if (back > 0) {
              expect(back).toBeGreaterThanOrEqual(CREDIT_BATCH);
              credits.push(back);
              returned += back;
            }
          } else if ("deliverData" in next) {
            for (const size of data.splice(0, next.deliverData)) {
              expect(window.receive(size)).toBeUndefined();
              received += size;
            }
          } else {
            for (const size of credits.splice(0, next.deliverCredit)) {
              expect(credit.grant(size)).toBeUndefined();
              granted += size;
            }
          }
          // Never sends past credit: in flight and unconsumed, at most one window.
          expect(sent - granted).toBeLessThanOrEqual(INITIAL_WINDOW);
          expect(credit.available).toBe(INITIAL_WINDOW - sent + granted);
          // Credit returned equals bytes consumed, less the part of a batch still pending.
          expect(returned + window.pending).toBe(consumed);
          expect(window.pending).toBeLessThan(CREDIT_BATCH);
        }
      }),
    );
  });

  it("keeps a stream moving: a reader that consumes everything gets the whole body through", () => {
    fc.assert(
      fc.property(fc.nat({ max: 4 * INITIAL_WINDOW }), fc.integer({ min: 512, max: MAX_DATA_CHUNK }), (total, chunk) => {
        const credit = new SendCredit();
        const window = new ReceiveWindow();
        let left = total;
        while (left > 0) {
          const size = credit.take(Math.min(chunk, left));
          if (size === 0) throw new Error(`stuck with ${left} of ${total} bytes left`);
          const overrun = window.receive(size);
          if (overrun) throw new Error(overrun);
          left -= size;
          const back = window.consume(size);
          const violation = back > 0 ? credit.grant(back) : undefined;
          if (violation) throw new Error(violation);
        }
      }),
    );
  });

  it("catches a peer that sends past what it was allowed, at the first byte over", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ sends: fc.integer({ min: 1, max: 4 * MAX_DATA_CHUNK }) }),
            // Up to the byte: all that is left of the allowance, plus 0, 1 or 2.
            fc.record({ fills: fc.integer({ min: 0, max: 2 }) }),
            fc.record({ consumes: fc.nat() }),
          ),
          {
            minLength: 10,
            maxLength: 200,
            size: "max",
          },
        ),
        fc.constantFrom(0, PIECE_OVERSHOOT),
        (steps, tolerance) => {
          const window = new ReceiveWindow(INITIAL_WINDOW, tolerance);
          let received = 0;
          let consumed = 0;
          let granted = 0;
          for (const next of steps) {
            if ("consumes" in next) {
              const size = next.consumes % (received - consumed + 1);
              consumed += size;
              granted += window.consume(size);
              continue;
            }
            // A peer that ignores its credit: the receiver knows what it allowed.
            const left = INITIAL_WINDOW + granted + tolerance - received;
            const sends = "sends" in next ? next.sends : Math.max(1, left + next.fills);
            const over = sends > left;
            const verdict = window.receive(sends);
            if (over) {
              expect(verdict).toMatch(/arrived with credit for/);
              return;
            }
            expect(verdict).toBeUndefined();
            received += sends;
          }
        },
      ),
    );
  });

  it("catches a peer that grants credit for bytes it was never sent", () => {
    fc.assert(
      fc.property(fc.nat({ max: INITIAL_WINDOW }), fc.integer({ min: 1, max: INITIAL_WINDOW }), (sent, extra) => {
        const credit = new SendCredit();
        credit.take(sent);
        expect(credit.grant(sent)).toBeUndefined();
        expect(credit.grant(extra)).toMatch(/would exceed the 1048576-byte window/);
        expect(credit.available).toBe(INITIAL_WINDOW);
      }),
    );
  });
});
