import { CloseCode } from "@burrow/protocol";
import type { NameRecord } from "./admission.ts";
import type { Link } from "./host.ts";
import type { TunnelCore } from "./tunnel.ts";
import { endSession, releaseForToken } from "./tunnel-hello.ts";
import { releasePort } from "./tunnel-ports.ts";
import { reportShard } from "./tunnel-shards.ts";
import { type Attachment, NAME_KEY, REFRESH_MS, RULES_KEY } from "./tunnel-state.ts";

/**
 * While an agent is connected, its name's last use moves forward. Once its agent has been
 * gone longer than RESUME_SECONDS, the tunnel's visitor rules (webhook secrets among them)
 * are deleted; once unused for NAME_TTL_DAYS, the name is.
 */
export async function nameAlarm(t: TunnelCore): Promise<void> {
  const record = await t.host.storage.get<NameRecord>(NAME_KEY);
  if (!record) {
    // A shard (which keeps no name): its rules leave once its agent has not come back.
    if (!(t.agent() ?? t.current)) await t.host.storage.delete(RULES_KEY);
    return;
  }
  const now = Date.now();
  if (t.agent() ?? t.current) {
    await t.host.storage.put(NAME_KEY, { ...record, lastUsed: now });
    await t.host.storage.setAlarm(now + REFRESH_MS);
    return;
  }
  const expires = record.lastUsed + t.settings.nameTtlMs;
  if (now >= expires) {
    await t.host.storage.deleteAll();
    releasePort(t);
    return;
  }
  if (now >= record.lastUsed + t.settings.resumeMs) {
    t.rules = null;
    t.rulesGeneration++;
    await t.host.storage.delete(RULES_KEY);
    await t.host.storage.setAlarm(expires);
  } else {
    await t.host.storage.setAlarm(Math.min(expires, record.lastUsed + t.settings.resumeMs + 1000));
  }
}

/**
 * The agent link left. A clean stop ends its session; a cut leaves the session waiting
 * RESUME_SECONDS for the agent, its streams paused; either way the name stays its owner's.
 */
export function dropped(t: TunnelCore, socket: Link, code: number, reason: string): void {
  const attachment = socket.deserializeAttachment() as Attachment | null;
  t.probes.get(socket)?.(false);
  t.close(socket, 1000, "closed");
  if (attachment?.phase !== "ready") return;
  const session = t.current;
  // A link that a newer connection replaced: the session is the newer one's now.
  if (!session || session.link !== socket) return;
  session.detach();
  const clean = code === CloseCode.Normal;
  const why = clean ? "stopped" : `disconnected (${code}${reason ? ` ${reason}` : ""})`;
  if (clean) {
    endSession(t, session, `The agent for tunnel "${attachment.name}" ${why}.`);
  } else {
    const resumeMs = t.settings.resumeMs;
    session.resumeTimer = setTimeout(() => {
      if (t.current === session && !session.link) {
        endSession(
          t,
          session,
          `The agent for tunnel "${attachment.name}" ${why} and did not come back within ${resumeMs / 1000}s.`,
        );
        t.host.waitUntil(releaseForToken(t, attachment.owner, attachment.name));
      }
    }, resumeMs);
  }
  const now = Date.now();
  if (attachment.shard) {
    // Visitors go to the tunnel's other shards from now on; this one's rules go soon after.
    reportShard(t, attachment.name, attachment.shard, false);
    if (!clean) return void t.host.waitUntil(t.host.storage.setAlarm(now + t.settings.resumeMs + 1000));
    t.rules = null;
    t.rulesGeneration++;
    t.host.waitUntil(t.host.storage.delete(RULES_KEY));
    return;
  }
  t.host.waitUntil(
    (async () => {
      if (clean) {
        await releaseForToken(t, attachment.owner, attachment.name);
        // A new agent may have come meanwhile: the tunnel's state is its now.
        if (t.current) return;
        // Its rules leave with it; on an open relay the name is free at once.
        t.rules = null;
        t.rulesGeneration++;
        await t.host.storage.delete(RULES_KEY);
        if (!attachment.owner.startsWith("token:")) {
          await t.host.storage.delete(NAME_KEY);
          releasePort(t);
          return;
        }
      }
      const record: NameRecord & { dropped: boolean } = {
        owner: attachment.owner,
        label: attachment.label,
        lastUsed: now,
        connected: false,
        dropped: !clean,
      };
      if (t.current && t.current !== session) return;
      if (!clean && session.link) return; // resumed already
      await t.host.storage.put(NAME_KEY, record);
      // Soon after the resume window, to delete the rules of an agent that did not come back.
      await t.host.storage.setAlarm(clean ? now + t.settings.nameTtlMs : now + t.settings.resumeMs + 1000);
    })(),
  );
}
