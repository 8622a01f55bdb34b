// Basic (RFC 7617): user and password in base64, judged on the first request that carries them.
import { type ProxyAuthScheme, SchemeUnavailable } from "./scheme.ts";

export const basic: ProxyAuthScheme = {
  name: "basic",
  start({ credentials }) {
    if (!credentials) throw needsCredentials("Basic");
    // RFC 7617 section 2.1: the user-id cannot contain a colon.
    if (credentials.user.includes(":")) {
      throw new SchemeUnavailable("Basic", 'a Basic user name cannot contain ":"', "check the user name");
    }
    const header = `Basic ${Buffer.from(`${credentials.user}:${credentials.password}`, "utf8").toString("base64")}`;
    let attempts = 0;
    return {
      scheme: "Basic",
      connectionBound: false,
      get attempts() {
        return attempts;
      },
      respond() {
        // A 407 after the credentials were sent means they were refused: never send them again.
        if (attempts > 0) return undefined;
        attempts++;
        return header;
      },
    };
  },
};

/** The error of a scheme that needs a user and a password that were not given. */
export function needsCredentials(scheme: string): SchemeUnavailable {
  return new SchemeUnavailable(
    scheme,
    `${scheme} needs a user name and a password, and none were given`,
    "set BURROW_PROXY_USER and BURROW_PROXY_PASSWORD (or proxy-user and proxy-password in burrow.toml); the proxy URL's http://USER:PASSWORD@HOST:PORT works too, but other users see it in `ps`",
  );
}
