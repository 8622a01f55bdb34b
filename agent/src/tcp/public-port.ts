import type { Log } from "../log.ts";

/**
 * The lines an agent prints when a self-hosted relay gave its TCP tunnel a public port (its
 * Ready's url is `tcp://HOST:PORT`): where plain clients connect, and who may. No key guards
 * that port: only the tunnel's --allow-ip does, so a port open to every address is a warning.
 * @returns whether `url` was such a port.
 */
export function announcePublicPort(name: string, url: string, allowIp: readonly string[], log: Log): boolean {
  if (!url.startsWith("tcp://")) return false;
  let host: string;
  let port: string;
  try {
    ({ hostname: host, port } = new URL(url));
  } catch {
    return false;
  }
  if (!port) return false;
  host = host.replace(/^\[|\]$/g, ""); // ssh and psql take ::1, not [::1]
  log.info(
    `tunnel ${name}: plain clients reach it at ${host} port ${port}, with no connect and no key (ssh -p ${port} ${host}, psql -h ${host} -p ${port})`,
    "public-port",
    { name, host, port: Number(port) },
  );
  if (allowIp.length === 0) {
    log.warn(
      `tunnel ${name}: ${host}:${port} is open to every address that reaches the relay; connect keys do not guard it: narrow it with --allow-ip`,
      "public-port-open",
      { name },
    );
  } else {
    log.info(`tunnel ${name}: ${host}:${port} admits ${allowIp.join(", ")} only (--allow-ip)`, "public-port-rules", { name });
  }
  return true;
}
