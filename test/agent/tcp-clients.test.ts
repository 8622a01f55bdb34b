// `agent connect`'s local clients across its sessions: a client that arrives while no session
// serves them (the first not yet up, or the last one ended: its tunnel's agent left) waits,
// paused, for the next one instead of opening a stream on a session that is over.
import { DEFAULT_MAX_STREAMS, type Frame, FrameType } from "@burrow/protocol";
import { describe, expect, it } from "vitest";
import { Log } from "../../agent/src/log.ts";
import { type ClientSocket, LocalClients } from "../../agent/src/tcp/clients.ts";

/** A local client's socket that records what the streams do to it. */
function socket(): ClientSocket & { paused: boolean; destroyed: boolean } {
  return {
    paused: false,
    destroyed: false,
    write: (_bytes, written) => written(),
    end: () => {},
    destroy() {
      this.destroyed = true;
    },
    pause() {
      this.paused = true;
    },
    resume() {
      this.paused = false;
    },
    on() {
      return this;
    },
  };
}

describe("agent connect's local clients", () => {
  it("wait, paused, for the next session after one ended, and then open their stream on it", () => {
    const clients = new LocalClients(new Log({ quiet: true }));
    const first: Frame[] = [];
    const streams = clients.streams((frame) => first.push(frame));
    const old = socket();
    clients.add(old);
    expect(first).toEqual([{ type: FrameType.Open, stream: 1, from: "" }]);

    streams.abortAll("the tunnel's agent left meanwhile");
    expect(old.destroyed).toBe(true);
    const late = socket();
    clients.add(late);
    expect(late.paused).toBe(true);
    expect(first).toHaveLength(1);
    expect(clients.open).toBe(1);

    const next: Frame[] = [];
    clients.streams((frame) => next.push(frame));
    expect(next).toEqual([{ type: FrameType.Open, stream: 1, from: "" }]);
    expect(late.paused).toBe(false);
  });

  it("hold at most DEFAULT_MAX_STREAMS clients before the first session, closing more with a warning", () => {
    const warnings: string[] = [];
    const log = new Log({ quiet: true });
    log.warn = (line: string) => void warnings.push(line);
    const clients = new LocalClients(log);
    const waiting = Array.from({ length: DEFAULT_MAX_STREAMS }, () => socket());
    for (const client of waiting) clients.add(client);
    const over = socket();
    clients.add(over);
    expect(over.destroyed).toBe(true);
    expect(waiting.some((client) => client.destroyed)).toBe(false);
    expect(clients.open).toBe(DEFAULT_MAX_STREAMS);
    expect(warnings).toEqual([`${DEFAULT_MAX_STREAMS} connections already wait for the relay; closing another one`]);
    const opened: Frame[] = [];
    clients.streams((frame) => opened.push(frame));
    expect(opened).toHaveLength(DEFAULT_MAX_STREAMS);
  });
});
