// Proxy credentials from the settings (BURROW_PROXY_USER and BURROW_PROXY_PASSWORD, or
// proxy-user and proxy-password in burrow.toml), for every proxy whose URL carries none: the
// one configured, and those a PAC file names.
import type { Credentials } from "./scheme.ts";

/**
 * A lookup of credentials by proxy host, from the user and password settings.
 * @throws {Error} when only one of the two is given (the message says which is missing).
 */
export function credentialsFromSettings(
  user: string | undefined,
  password: string | undefined,
): (proxyHost: string) => Credentials | undefined {
  if (user === undefined && password === undefined) return () => undefined;
  if (user === undefined) throw new Error("a proxy password is set (BURROW_PROXY_PASSWORD or proxy-password) without a user");
  if (password === undefined) throw new Error(`a proxy user is set ("${user}") without a password`);
  const credentials: Credentials = { user, password, source: "BURROW_PROXY_USER and BURROW_PROXY_PASSWORD (or burrow.toml)" };
  return () => credentials;
}
