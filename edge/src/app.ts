import { CONNECT_PATH, INFO_PATH, PROTOCOL_VERSION, type RelayInfo, SESSION_PATH, TUNNEL_NAME_PATTERN } from "@burrow/protocol";
import { type Context, Hono } from "hono";
import type { Env } from "./env.ts";
import { EdgeError } from "./errors.ts";
import { forwardedRequestHeaders, INTERNAL } from "./headers.ts";

type App = { Bindings: Env };

/**
 * The Worker's routes. A request whose Host is `<name>.<BASE_DOMAIN>` belongs to that tunnel
 * whatever its path; on the base host, `/t/<name>/...` reaches a tunnel by path (workers.dev
 * has no wildcard subdomains) and CONNECT_PATH is where agents dial in.
 */
export const app = new Hono<App>();

app.onError((error) => {
  if (error instanceof EdgeError) return error.toResponse();
  console.error("relay error", error);
  return new EdgeError(500, "relay-error", "The relay failed to handle this request; it has been logged.").toResponse();
});

app.use("*", async (c, next) => {
  const name = tunnelFromHost(new URL(c.req.url).hostname, c.env.BASE_DOMAIN);
  if (!name) return next();
  const url = new URL(c.req.url);
  return visit(c, name, url.pathname + url.search, "");
});

app.get(CONNECT_PATH, (c) => {
  const name = c.req.query("name") ?? "";
  checkName(name);
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new EdgeError(426, "bad-request", `${CONNECT_PATH} is where Burrow agents connect, with a WebSocket upgrade.`);
  }
  const headers = new Headers(c.req.raw.headers);
  headers.set(INTERNAL.publicUrl, publicUrl(new URL(c.req.url), name, c.env.BASE_DOMAIN));
  return tunnel(c, name).fetch(new Request(c.req.raw, { headers }));
});

// `agent doctor` asks whether this is a Burrow relay, and which protocol it speaks.
app.get(INFO_PATH, (c) => c.json({ burrow: true, protocol: PROTOCOL_VERSION } satisfies RelayInfo));

// The HTTPS transport, for agents whose network blocks WebSockets (see SESSION_PATH): a POST
// without a session header opens one; the others name theirs in SESSION_HEADER.
app.on(["GET", "POST", "DELETE"], SESSION_PATH, (c) => {
  const name = c.req.query("name") ?? "";
  checkName(name);
  const headers = new Headers(c.req.raw.headers);
  headers.set(INTERNAL.publicUrl, publicUrl(new URL(c.req.url), name, c.env.BASE_DOMAIN));
  return tunnel(c, name).fetch(new Request(c.req.raw, { headers }));
});

app.all("/t/:name{[^/]+}", (c) => {
  const url = new URL(c.req.url);
  // Relative links in the page resolve against the prefix only with the trailing slash.
  return c.redirect(`${url.pathname}/${url.search}`, 308);
});

app.all("/t/:name{[^/]+}/*", (c) => {
  const name = c.req.param("name");
  checkName(name);
  const url = new URL(c.req.url);
  const prefix = `/t/${name}`;
  return visit(c, name, url.pathname.slice(prefix.length) + url.search, prefix);
});

app.get("/", (c) => {
  const url = new URL(c.req.url);
  const byName = publicUrl(url, "<name>", c.env.BASE_DOMAIN);
  const byPath = `${url.origin}/t/<name>/`;
  const where = byName.endsWith("/") ? byPath : `${byName}/ and ${byPath}`;
  return c.text(`Burrow relay. Tunnels are served at ${where}\n`);
});

app.notFound((c) =>
  new EdgeError(404, "not-found", `Nothing here: ${new URL(c.req.url).pathname}. Tunnels are served at /t/<name>/.`).toResponse(),
);

async function visit(c: Context<App>, name: string, path: string, prefix: string): Promise<Response> {
  const request = c.req.raw;
  const url = new URL(request.url);
  const headers = new Headers(
    forwardedRequestHeaders(request.headers, {
      clientIp: request.headers.get("cf-connecting-ip"),
      proto: url.protocol.slice(0, -1),
      host: request.headers.get("host") ?? url.host,
      prefix,
    }),
  );
  headers.set(INTERNAL.tunnel, name);
  headers.set(INTERNAL.path, path);
  const clientIp = request.headers.get("cf-connecting-ip");
  if (clientIp) headers.set(INTERNAL.clientIp, clientIp);
  // Hop-by-hop, so dropped above; the Durable Object needs it to answer with a WebSocket.
  if (request.headers.get("upgrade")?.toLowerCase() === "websocket") headers.set("upgrade", "websocket");
  const response = await tunnel(c, name).fetch("https://tunnel.internal/visit", {
    method: request.method,
    headers,
    body: request.body,
    redirect: "manual",
  });
  const location = response.headers.get("location");
  if (!prefix || !location?.startsWith("/") || location.startsWith("//")) return response;
  // Reached by path: keep root-relative redirects inside the tunnel's prefix.
  const rewritten = new Response(response.body, response);
  rewritten.headers.set("location", prefix + location);
  return rewritten;
}

function tunnel(c: Context<App>, name: string): DurableObjectStub {
  return c.env.TUNNELS.get(c.env.TUNNELS.idFromName(name));
}

function checkName(name: string): void {
  if (!TUNNEL_NAME_PATTERN.test(name)) {
    throw new EdgeError(
      400,
      "bad-request",
      `"${name.slice(0, 80)}" is not a tunnel name: use 1 to 63 lowercase letters, digits and inner hyphens.`,
    );
  }
}

/** `demo.localhost` with base `localhost` -> "demo". Only one label deep, only valid names. */
export function tunnelFromHost(hostname: string, base: string): string | undefined {
  if (!base || !hostname.endsWith(`.${base}`)) return undefined;
  const label = hostname.slice(0, -base.length - 1);
  return TUNNEL_NAME_PATTERN.test(label) ? label : undefined;
}

/** The URL visitors use: a subdomain when the agent reached the relay on its base domain. */
export function publicUrl(connect: URL, name: string, base: string): string {
  const { hostname, protocol, port } = connect;
  if (base && (hostname === base || hostname.endsWith(`.${base}`))) {
    return `${protocol}//${name}.${base}${port ? `:${port}` : ""}`;
  }
  return `${connect.origin}/t/${name}/`;
}
