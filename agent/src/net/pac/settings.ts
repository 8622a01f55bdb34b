// --proxy-pac, --proxy auto and --proxy-credentials-for, read into a PacProxies for the dial.

import { AgentError } from "../../errors.ts";
import type { Log } from "../../log.ts";
import { PacProxies, WPAD_URL } from "./pac.ts";

/**
 * The PAC to use, or undefined for none. `--proxy auto` looks for WPAD's PAC; `--proxy-pac`
 * (or BURROW_PROXY_PAC, or `proxy-pac` in burrow.toml) names one; any other `--proxy` value wins
 * over a PAC (it is the way around a broken one).
 * @throws {AgentError} "usage" for a PAC location that is not http:, https:, file: or a path.
 */
export function pacSettings(
  args: Record<string, string>,
  env: (name: string) => string | undefined,
  options: {
    ca: string[];
    timeoutMs: number;
    log: Pick<Log, "info" | "warn">;
  },
): PacProxies | undefined {
  const location = args["proxy-pac"];
  const wpad = args.proxy === "auto";
  if (!wpad && !location) return undefined;
  if (wpad && location) {
    throw new AgentError(
      "usage",
      "--proxy auto and --proxy-pac are both given",
      "--proxy auto looks for the PAC file by WPAD; --proxy-pac names it: give one",
    );
  }
  if (location && args.proxy !== undefined) {
    options.log.warn(
      `--proxy ${args.proxy === "" ? '""' : args.proxy.replace(/\/\/[^@/]*@/, "//***@")} is given: the PAC file ${location} is not used`,
    );
    return undefined;
  }
  if (location && /^[a-z][a-z0-9+.-]+:/i.test(location) && !/^(https?:\/\/|file:)/i.test(location)) {
    throw new AgentError(
      "usage",
      `--proxy-pac ${JSON.stringify(location)} is neither an http(s):// URL nor a file`,
      "for example --proxy-pac http://proxy.corp.example/proxy.pac, or --proxy-pac ./proxy.pac",
    );
  }
  // WPAD's answer can come from anyone on the network who answers to `wpad`: credentials go
  // only to the proxy hosts the user named (PacProxies.mayAuthenticate).
  const credentialHosts = (args["proxy-credentials-for"] ?? "")
    .split(/[\s,]+/)
    .map((host) => host.trim().toLowerCase())
    .filter(Boolean);
  return new PacProxies({
    location: location ?? WPAD_URL,
    source: wpad ? "--proxy auto" : env("BURROW_PROXY_PAC") === location ? "BURROW_PROXY_PAC" : "--proxy-pac",
    wpad,
    ca: options.ca,
    timeoutMs: options.timeoutMs,
    credentialHosts,
    note: (line) => options.log.info(line),
  });
}
