import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseChallenges } from "../../agent/src/net/proxy-auth/challenge.ts";
import { negotiate } from "../../agent/src/net/proxy-auth/negotiate.ts";
import { type AuthContext, SchemeUnavailable } from "../../agent/src/net/proxy-auth/scheme.ts";
import { selectScheme } from "../../agent/src/net/proxy-auth/select.ts";
import { ROOT } from "../_relay.ts";

// Negotiate's choices when Kerberos cannot run, on Node (which has no FFI, so no GSSAPI): the
// Kerberos side against a real KDC is in gssapi.test.ts and the corp end-to-end tests.

/** "NTLMSSP\0" and message type 1 (MS-NLMP 2.2.1.1), in base64. */
const NTLMSSP_NEGOTIATE = "TlRMTVNTUAABAAAA";

const context: AuthContext = {
  proxyHost: "proxy.corp.example",
  proxyPort: 3128,
  target: "relay.example:443",
  credentials: { user: "CORP\\alice", password: "pw", source: "test" },
};
const anonymous = { ...context, credentials: undefined };

async function unavailable(start: Promise<unknown> | unknown): Promise<SchemeUnavailable> {
  const error = await Promise.resolve(start).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(SchemeUnavailable);
  return error as SchemeUnavailable;
}

describe("Negotiate without Kerberos", () => {
  it("sends NTLM inside Negotiate, as Windows does, when the proxy offers only Negotiate and credentials were given", async () => {
    const exchange = await negotiate.start(context, parseChallenges(["Negotiate"]));
    expect(exchange.scheme).toBe("Negotiate");
    expect(exchange.connectionBound).toBe(true);
    const opening = await exchange.respond(undefined);
    expect(opening).toMatch(/^Negotiate /);
    expect(opening!.slice("Negotiate ".length)).toMatch(new RegExp(`^${NTLMSSP_NEGOTIATE}`));
  });

  it("leaves the credentials to the NTLM scheme when the proxy offers NTLM too", async () => {
    const offered = parseChallenges(["Negotiate", "NTLM"]);
    await unavailable(negotiate.start(context, offered));
    const { exchange } = await selectScheme(offered, context, undefined);
    expect(exchange.scheme).toBe("NTLM");
  });

  it("sends NTLM inside Negotiate when --proxy-auth pins negotiate, though the proxy offers NTLM too", async () => {
    const { exchange } = await selectScheme(parseChallenges(["Negotiate", "NTLM"]), context, "negotiate");
    expect(exchange.scheme).toBe("Negotiate");
    expect(await exchange.respond(undefined)).toMatch(new RegExp(`^Negotiate ${NTLMSSP_NEGOTIATE}`));
  });

  it("on Node without credentials, names the Bun agent, the executable and credentials", async () => {
    const error = await unavailable(negotiate.start(anonymous, parseChallenges(["Negotiate"])));
    expect(error.message).toMatch(/Node has no FFI/);
    expect(error.hint).toMatch(/Bun/);
    expect(error.hint).toMatch(/executable/);
    expect(error.hint).toMatch(/BURROW_PROXY_USER/);
    await expect(selectScheme(parseChallenges(["Negotiate"]), anonymous, undefined)).rejects.toThrow(
      /the proxy offers Negotiate, and none can be used here \(Negotiate: Node has no FFI/,
    );
  });

  it("says to give the proxy by host name when it is given by IP address, before any FFI is tried", async () => {
    const loaded: string[] = [];
    const ffi = async () => {
      loaded.push("ffi");
      throw new Error("not reached");
    };
    for (const proxyHost of ["10.0.0.8", "fd00::8"]) {
      const error = await unavailable(negotiate.start({ ...anonymous, proxyHost, ffi }, parseChallenges(["Negotiate"])));
      expect(error.message).toContain(`the proxy is given by its IP address (${proxyHost}), and Kerberos tickets name hosts`);
      expect(error.hint).toMatch(/^give the proxy by its host name/);
    }
    expect(loaded).toEqual([]);
  });

  it("passes on the runtime's own reason for withholding its FFI (Deno without --allow-ffi)", async () => {
    const ffi = async () => {
      throw Object.assign(new Error("Deno did not grant --allow-ffi"), { hint: "run `deno task agent-negotiate`" });
    };
    const error = await unavailable(negotiate.start({ ...anonymous, ffi }, parseChallenges(["Negotiate"])));
    expect(error.message).toBe("Deno did not grant --allow-ffi");
    expect(error.hint).toMatch(/^run `deno task agent-negotiate`, or give credentials/);
  });
});

describe("deno task agent-negotiate", () => {
  it("is deno task agent with --allow-ffi and nothing else, so that the two never drift apart", () => {
    const { tasks } = JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8"));
    expect(tasks["agent-negotiate"].command).toBe(tasks.agent.command.replace(" --allow-net ", " --allow-net --allow-ffi "));
    expect(tasks.agent.command).not.toContain("--allow-ffi");
  });
});
