import { isIPv4, isIPv6 } from "node:net";
import { hashBasicCredentials, hashConnectKey, MAX_RULES, type VisitorRules, type WebhookRule } from "@burrow/protocol";
import { AgentError } from "./errors.ts";

/** What --basic-auth, --allow-ip and --verify-webhook ask for, before the hashing. */
export interface RuleFlags {
  basicAuth: string[];
  allowIp: string[];
  verifyWebhook: string[];
  /** A TCP tunnel's keys, as given (`--connect-key-file`); the hello carries their hashes. */
  connectKeys?: string[];
}

/** The rules for the Hello, and the line the agent prints about them (no password, no secret). */
export interface Rules {
  rules: VisitorRules;
  summary: string;
}

// RFC 9110 section 5.6.2: a header name is a token.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The header GitHub signs webhook deliveries in, `sha256=<hex HMAC of the body>`. */
export const GITHUB_SIGNATURE_HEADER = "x-hub-signature-256";

/**
 * Turns the visitor-rule flags into the Hello's rules. Basic credentials leave this function
 * only as hashes salted with the tunnel name: the relay never learns a password.
 * @throws {AgentError} "usage" naming the flag and the value that is wrong.
 */
export async function visitorRules(name: string, flags: RuleFlags): Promise<Rules> {
  limit("--basic-auth", flags.basicAuth);
  limit("--allow-ip", flags.allowIp);
  limit("--verify-webhook", flags.verifyWebhook);
  const users: string[] = [];
  const basicAuth: string[] = [];
  for (const pair of flags.basicAuth) {
    const colon = pair.indexOf(":");
    // RFC 7617 section 2: the user-id cannot contain a colon, the password can.
    if (colon <= 0) {
      throw new AgentError(
        "usage",
        colon < 0 ? "--basic-auth needs user:password, and the value has no colon" : "--basic-auth has an empty user name",
        "for example --basic-auth alice:correct-horse (repeat the flag for more users)",
      );
    }
    const user = pair.slice(0, colon);
    users.push(user);
    basicAuth.push(await hashBasicCredentials(name, user, pair.slice(colon + 1)));
  }
  const allowIp = flags.allowIp.map(checkCidr);
  const webhooks = flags.verifyWebhook.map(checkWebhook);
  const keys = flags.connectKeys ?? [];
  limit("--connect-key-file", keys);
  const connectKeys = await Promise.all(keys.map((key) => hashConnectKey(name, key)));
  const parts = [
    keys.length ? `agent connect with ${keys.length === 1 ? "its key" : `one of ${keys.length} keys`}` : "",
    users.length ? `basic auth for ${users.join(", ")}` : "",
    allowIp.length ? `from ${allowIp.join(", ")}` : "",
    webhooks.length ? `webhook signatures ${webhooks.map((w) => `${w.kind} (${w.header})`).join(", ")}` : "",
  ].filter(Boolean);
  return {
    rules: { basicAuth, allowIp, webhooks, connectKeys },
    // Named: an agent with several tunnels (burrow.toml) prints one such line for each.
    summary: `visitors of tunnel ${name}: ${parts.length ? parts.join("; ") : "anyone with the URL"}`,
  };
}

function limit(flag: string, values: string[]): void {
  if (values.length > MAX_RULES) {
    throw new AgentError(
      "usage",
      `${flag} is given ${values.length} times; a tunnel takes at most ${MAX_RULES}`,
      flag === "--allow-ip" ? "cover neighbouring addresses with one wider range, like 10.0.0.0/8" : `keep ${MAX_RULES} or fewer`,
    );
  }
}

/**
 * An IPv4 or IPv6 address with an optional /prefix, as written (IPv6 in lowercase). Strict:
 * no leading zeros in IPv4 octets (`010` reads as octal to some parsers), no zone (`%eth0`).
 */
export function checkCidr(text: string): string {
  const bad = (why: string) =>
    new AgentError(
      "usage",
      `--allow-ip ${JSON.stringify(text)} is not an address range: ${why}`,
      "for example --allow-ip 203.0.113.0/24 or --allow-ip 2001:db8::/32",
    );
  const [address = "", prefix, ...rest] = text.split("/");
  if (rest.length > 0) throw bad("it has more than one /");
  const v4 = isIPv4(address);
  if (!v4 && !(isIPv6(address) && !address.includes("%"))) throw bad(`${address || "(empty)"} is not an IPv4 or IPv6 address`);
  if (prefix === undefined) return v4 ? address : address.toLowerCase();
  const max = v4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefix) || Number(prefix) > max)
    throw bad(`the prefix /${prefix} is not a number from 0 to ${max}`);
  return `${v4 ? address : address.toLowerCase()}/${prefix}`;
}

/** `github:SECRET` or `hmac-sha256:HEADER:SECRET`. */
export function checkWebhook(text: string): WebhookRule {
  const hint = "use --verify-webhook github:SECRET, or hmac-sha256:HEADER:SECRET for a signature in another header";
  const colon = text.indexOf(":");
  const kind = colon < 0 ? text : text.slice(0, colon);
  const rest = colon < 0 ? "" : text.slice(colon + 1);
  // The secret itself is never echoed back: the message names the kind and the header only.
  if (kind === "github") {
    if (!rest) throw new AgentError("usage", "--verify-webhook github: needs the webhook's secret after the colon", hint);
    return { kind, header: GITHUB_SIGNATURE_HEADER, secret: checkSecret(rest, hint) };
  }
  if (kind === "hmac-sha256") {
    const split = rest.indexOf(":");
    const header = split < 0 ? rest : rest.slice(0, split);
    const secret = split < 0 ? "" : rest.slice(split + 1);
    if (!TOKEN.test(header) || header.length > 128) {
      throw new AgentError("usage", `--verify-webhook hmac-sha256: ${JSON.stringify(header)} is not a header name`, hint);
    }
    if (!secret) throw new AgentError("usage", `--verify-webhook hmac-sha256:${header}: needs the secret after the header`, hint);
    return { kind, header: header.toLowerCase(), secret: checkSecret(secret, hint) };
  }
  throw new AgentError("usage", `--verify-webhook ${JSON.stringify(kind)} is not a signature kind`, hint);
}

function checkSecret(secret: string, hint: string): string {
  // The protocol's limit for a webhook secret in the Hello (codec.ts).
  if (secret.length > 512)
    throw new AgentError("usage", `the --verify-webhook secret is ${secret.length} characters; the limit is 512`, hint);
  return secret;
}
