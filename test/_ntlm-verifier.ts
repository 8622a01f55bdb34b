// Real NTLMv2 password checking for the corp-network squid (test/_corp.ts): squid's own
// ntlm_fake_auth accepts any password, so it cannot show that a wrong one fails.
//
// squid ──"YR/KK <token>"──▶ _ntlm-verifier.py ──gss_accept_sec_context──▶ gss-ntlmssp
//                                                                            └ NTLM_USER_FILE
// The verdict comes from gss-ntlmssp (Debian package gss-ntlmssp, loaded by MIT krb5's GSSAPI
// through /etc/gss/mech.d), an implementation independent of the agent's; the helper computes
// nothing. LM_COMPAT_LEVEL=5 makes it refuse LM, NTLMv1 and NTLM2-session responses, as a
// Windows server with "Send NTLMv2 response only. Refuse LM & NTLM" does.

import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./_relay.ts";

/** An account the proxy knows: the agent authenticates as `DOMAIN\user`. */
export interface NtlmAccount {
  domain: string;
  user: string;
  password: string;
}

const PYTHON = "/usr/bin/python3";
const HELPER = join(ROOT, "test", "_ntlm-verifier.py");
/** The helper's verdicts, one line each, written before it answers squid (see log() there). */
const VERDICTS = "ntlm-verdicts.log";

let availability: { ok: true } | { ok: false; reason: string } | undefined;

/**
 * Whether gss-ntlmssp can accept NTLMSSP here: the helper acquires an acceptor credential for
 * the mechanism and exits. Checked once, synchronously (for describe.skipIf).
 */
export function ntlmVerifierAvailable(): { ok: true } | { ok: false; reason: string } {
  if (availability) return availability;
  try {
    execFileSync(PYTHON, [HELPER, "--check"], { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
    availability = { ok: true };
  } catch (error) {
    const detail = (error as { stderr?: string }).stderr?.trim() || (error as Error).message;
    availability = { ok: false, reason: `no NTLMSSP acceptor (needs python3 and gss-ntlmssp): ${detail}` };
  }
  return availability;
}

/**
 * For describe.skipIf, as skipCorp: true after a loud warning when the verifier cannot run
 * here; with BURROW_REQUIRE_CORP=1 (CI) it throws instead.
 */
export function skipNtlmVerifier(what: string): boolean {
  const available = ntlmVerifierAvailable();
  if (available.ok) return false;
  const message = `\n!!! SKIPPING ${what}: ${available.reason}\n`;
  if (process.env.BURROW_REQUIRE_CORP === "1") throw new Error(message);
  console.warn(message);
  return true;
}

/**
 * Writes the helper and its user file into `dir` (squid's temp dir) and returns the squid.conf
 * lines that make squid answer `407 Proxy-Authenticate: NTLM` and check each handshake with it,
 * the files to hand to squid's user, and its command line for negotiate_wrapper_auth (NTLM inside Negotiate).
 * @throws when a field holds ":" or a line break (the user file's separators: gss-ntlmssp reads
 * a line with a fourth ":" as smbpasswd format), or when the verifier cannot run here.
 */
export function ntlmVerifier(dir: string, account: NtlmAccount): { config: string[]; files: string[]; insideNegotiate: string } {
  for (const [field, value] of Object.entries(account)) {
    if (/[:\r\n]/.test(value)) throw new Error(`NTLM test account: the ${field} must not hold ":" or a line break`);
  }
  const available = ntlmVerifierAvailable();
  if (!available.ok) throw new Error(available.reason);
  const [helper, users, verdicts] = [join(dir, "ntlm-verifier.py"), join(dir, "ntlm-users"), join(dir, VERDICTS)];
  // Copied: squid's user may not be able to read the repository.
  copyFileSync(HELPER, helper);
  writeFileSync(users, `${account.domain}:${account.user}:${account.password}\n`, { mode: 0o600 });
  // Appended to, never emptied: restartSquid() comes here again, and a test counts the verdicts
  // from before the restart.
  writeFileSync(verdicts, "", { flag: "a" });
  const program = [
    "/usr/bin/env",
    `NTLM_USER_FILE=${users}`,
    `BURROW_NTLM_VERDICTS=${verdicts}`,
    "LM_COMPAT_LEVEL=5",
    PYTHON,
    helper,
  ];
  return {
    config: [
      `auth_param ntlm program ${program.join(" ")}`,
      // Stateful: a helper is held from a client's type 1 to its type 3, so a few at once.
      "auth_param ntlm children 4 startup=1 idle=1",
      "auth_param ntlm keep_alive on",
    ],
    files: [helper, users, verdicts],
    insideNegotiate: [program[0], "BURROW_NTLM_INSIDE_NEGOTIATE=1", ...program.slice(1)].join(" "),
  };
}

/**
 * The verifier's verdicts so far, from its own log in `dir` (the corp network's dir): one
 * line per type 3 message, such as "accepted NTLMv2 response from CORP\alice" or "refused
 * NTLMv2 response from CORP\alice: <gss-ntlmssp's reason>". Squid's access log shows only
 * `TCP_DENIED/407 ... -` for a refused handshake, without the user or the reason.
 */
export function ntlmVerdicts(dir: string): string[] {
  const file = join(dir, VERDICTS);
  if (!existsSync(file)) return [];
  const prefix = "burrow ntlm verifier: ";
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.startsWith(prefix))
    .map((line) => line.slice(prefix.length));
}
