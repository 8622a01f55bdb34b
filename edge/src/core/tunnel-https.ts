import { SESSION_HEADER, SESSION_PATH, TAKE_PARAM, unackedLimit } from "@burrow/protocol";
import { identify } from "./admission.ts";
import { EdgeError } from "./errors.ts";
import { INTERNAL } from "./headers.ts";
import { PollingLink } from "./polling.ts";
import type { TunnelCore } from "./tunnel.ts";
import { awaitConnect, CONNECTOR_ROLE, fromConnector } from "./tunnel-connect.ts";
import { fromAgent } from "./tunnel-frames.ts";

/** The HTTPS transport: open a session, carry frames both ways, close it. */
export async function httpsRequest(t: TunnelCore, request: Request, url: URL): Promise<Response> {
  const id = request.headers.get(SESSION_HEADER);
  if (request.method === "POST" && id === null) {
    const connector = url.searchParams.get("role") === CONNECTOR_ROLE;
    // A relay with tokens opens sessions for its agents only (the hello checks again); a
    // visitor's connect has a key instead, which its Connect shows.
    const tokens = await t.tokenList();
    if (!connector && (tokens.entries.length > 0 || tokens.error)) {
      const bearer = /^Bearer\s+(\S+)$/i.exec(request.headers.get("authorization") ?? "")?.[1] ?? "";
      if (!(await identify(tokens, bearer))) {
        throw new EdgeError(401, "unauthorized", "This relay requires a token: pass --token-file, --token or BURROW_TOKEN.");
      }
    }
    const link = new PollingLink((ended, code, reason) => {
      t.pollingLinks.delete(ended.id);
      t.linkClosed(ended, code, reason);
    }, unackedLimit(t.settings.maxStreams).bytes);
    t.pollingLinks.set(link.id, link);
    link.connector = connector;
    if (connector) awaitConnect(t, link, request, url, request.headers.get(INTERNAL.clientIp) ?? "");
    else t.awaitHello(link, request, url);
    // `take`: this relay answers a POST with frames when the POST asks (TAKE_PARAM); an agent
    // that does not know it ignores the field, and its POSTs are answered 204 as before.
    return Response.json({ session: link.id, take: true }, { status: 201, headers: { "Cache-Control": "no-store" } });
  }
  const link = id === null ? undefined : t.pollingLinks.get(id);
  if (!link) {
    throw new EdgeError(404, "not-found", "No such session: it ended, or the relay restarted. Open a new one.");
  }
  const number = (name: string) => {
    const value = Number(url.searchParams.get(name));
    if (!Number.isSafeInteger(value) || value < 0) throw new EdgeError(400, "bad-request", `?${name}= must be a count`);
    return value;
  };
  if (request.method !== "DELETE") t.probes.get(link)?.(true);
  switch (request.method) {
    case "GET":
      return link.poll(number("ack"), number("wait"), request.signal);
    case "POST": {
      const body = new Uint8Array(await request.arrayBuffer());
      if (link.receive(number("seq")) === "new") await (link.connector ? fromConnector : fromAgent)(t, link, body);
      // Applied first: the answer carries what the frames caused (a Ready after a hello) or
      // what came meanwhile. A repeated POST is a poll again, so a cut answer is sent again.
      if (url.searchParams.get(TAKE_PARAM) === "1") return link.poll(number("ack"), number("wait"), request.signal);
      return new Response(null, { status: 204 });
    }
    case "DELETE":
      link.closedByAgent(number("code"), url.searchParams.get("reason") ?? "");
      return new Response(null, { status: 204 });
    default:
      throw new EdgeError(405, "bad-request", `${request.method} is not used on ${SESSION_PATH}`);
  }
}
