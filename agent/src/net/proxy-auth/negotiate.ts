// Negotiate (SPNEGO, RFC 4559) is not implemented yet: this placeholder reports it unavailable,
// so that the selection moves on to NTLM, which proxies that offer Negotiate offer too.
import { type ProxyAuthScheme, SchemeUnavailable } from "./scheme.ts";

export const negotiate: ProxyAuthScheme = {
  name: "negotiate",
  start() {
    throw new SchemeUnavailable(
      "Negotiate",
      "this agent does not speak Negotiate (Kerberos) yet",
      "give credentials for NTLM, Digest or Basic, if the proxy offers one of them",
    );
  },
};
