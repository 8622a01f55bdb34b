// Negotiate (RFC 4559): a Kerberos ticket from the user's credential cache, through the system's
// GSSAPI (./gssapi.ts) on the runtime's FFI, for the service HTTP@<proxy host>. Without one
// (no ticket, no FFI on Node 20, a proxy given by IP address), it does what Windows' Negotiate
// package does: NTLM inside Negotiate with the credentials given, unless the proxy offers NTLM
// on its own, which every NTLM-checking proxy accepts (a Kerberos-only Negotiate helper, such as
// squid's negotiate_kerberos_auth beside ntlm_auth, would refuse an NTLMSSP token).
import { isIP } from "node:net";
import type { Ffi } from "../../runtime.ts";
import { type Gssapi, GssError, openGssapi } from "./gssapi.ts";
import { ntlmExchange } from "./ntlm.ts";
import { type AuthContext, type Challenge, type ProxyAuthExchange, type ProxyAuthScheme, SchemeUnavailable } from "./scheme.ts";

const CREDENTIALS_HINT =
  "or give credentials (BURROW_PROXY_USER and BURROW_PROXY_PASSWORD) for NTLM, which the agent then sends inside Negotiate";

/** The library, opened once per process and kept: tickets come from the cache on each call. */
let opened: { ffi: Ffi; gssapi: Gssapi } | undefined;

async function load(ffi: () => Promise<Ffi>): Promise<Gssapi> {
  let runtimeFfi: Ffi;
  try {
    runtimeFfi = await ffi();
  } catch (error) {
    const hint = (error as { hint?: string }).hint ?? "run the agent on Bun or use the single executable for Negotiate";
    throw new SchemeUnavailable("Negotiate", (error as Error).message, `${hint}, ${CREDENTIALS_HINT}`);
  }
  if (opened?.ffi !== runtimeFfi) {
    try {
      opened = { ffi: runtimeFfi, gssapi: openGssapi(runtimeFfi) };
    } catch (error) {
      throw new SchemeUnavailable(
        "Negotiate",
        `the system's Kerberos library (GSSAPI) is not installed: ${(error as Error).message}`,
        `install MIT Kerberos (libgssapi-krb5-2 on Debian and Ubuntu, krb5-libs on Fedora), ${CREDENTIALS_HINT}`,
      );
    }
  }
  return opened.gssapi;
}

/** What `kinit` would fix: the cache's principal when there is one, or the default realm. */
function kinitHint(gssapi: Gssapi): string {
  const { realm, principal } = gssapi.identity();
  const who = principal ?? `YOUR_USER@${realm ?? "YOUR.REALM"}`;
  return `run \`kinit ${who}\` for a Kerberos ticket (\`klist\` shows the ones you have), ${CREDENTIALS_HINT}`;
}

/** A Kerberos ticket for HTTP@<proxy host> and its principal, or why there is none (SchemeUnavailable). */
async function kerberosToken(context: AuthContext): Promise<{ token: Uint8Array; principal: string | undefined }> {
  const host = context.proxyHost;
  // A ticket names its service by host name (RFC 4120 6.2.1): HTTP@10.0.0.1 is no principal a
  // realm has, and the agent never looks up names behind the user's back (rdns is insecure).
  if (isIP(host)) {
    throw new SchemeUnavailable(
      "Negotiate",
      `the proxy is given by its IP address (${host}), and Kerberos tickets name hosts`,
      `give the proxy by its host name, as the system's or the browser's proxy settings name it (--proxy http://proxy.corp.example:${context.proxyPort}), ${CREDENTIALS_HINT}`,
    );
  }
  if (!context.ffi) {
    throw new SchemeUnavailable(
      "Negotiate",
      "Node has no FFI to call the system's Kerberos library (GSSAPI)",
      `run the agent on Bun (\`bunx --bun --package burrow-agent agent\`) or use the single executable for Negotiate, ${CREDENTIALS_HINT}`,
    );
  }
  const gssapi = await load(context.ffi);
  const service = `HTTP@${host}`;
  try {
    // Synchronous: the first call for a service asks the KDC for its ticket (the cache keeps it).
    const token = gssapi.initiate(service);
    return { token, principal: gssapi.identity().principal };
  } catch (error) {
    if (!(error instanceof GssError)) throw error;
    if (error.noTicket) throw new SchemeUnavailable("Negotiate", error.message, kinitHint(gssapi));
    throw new SchemeUnavailable(
      "Negotiate",
      error.message,
      `check that the proxy's host name is the one its Kerberos principal HTTP/${host} names, ${CREDENTIALS_HINT}`,
    );
  }
}

/** One Kerberos round: the token goes with the first request; a 407 after it is a refusal. */
function kerberosExchange({ token, principal }: { token: Uint8Array; principal: string | undefined }): ProxyAuthExchange {
  let attempts = 0;
  return {
    scheme: "Negotiate",
    principal: principal ?? "your Kerberos principal",
    // The proxy authenticates the connection the token came on (RFC 4559 section 4.2).
    connectionBound: true,
    get attempts() {
      return attempts;
    },
    respond() {
      if (attempts > 0) return undefined;
      attempts++;
      return `Negotiate ${Buffer.from(token).toString("base64")}`;
    },
  };
}

export const negotiate: ProxyAuthScheme = {
  name: "negotiate",
  async start(context, challenges: readonly Challenge[] = []) {
    try {
      return kerberosExchange(await kerberosToken(context));
    } catch (error) {
      if (!(error instanceof SchemeUnavailable)) throw error;
      const ntlmOffered = challenges.some((challenge) => challenge.name === "ntlm");
      if (context.credentials && !ntlmOffered) return ntlmExchange(context.credentials, "Negotiate");
      throw error;
    }
  },
};
