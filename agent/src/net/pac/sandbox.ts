// FindProxyForURL, run in QuickJS (WebAssembly). This module (with QuickJS and the helpers) is
// imported only when a PAC file is used (pac.ts): the package's bundler makes it a file of its
// own, dist/pac-sandbox.js (agent/scripts/bundle.js), which an agent without a PAC never parses.
//: the PAC file sees the standard helpers and
// nothing else of the machine (no require, no fetch, no process, no file, no socket), and runs
// under a time limit (QuickJS's interrupt handler) and a memory limit.
//
// DNS: dnsResolve and friends are synchronous in PAC files, the runtime's resolver is not. Rather
// than QuickJS's asyncify build (twice the size and slower, one suspended call at a time), an
// evaluation that asks for a name not yet known stops there, the agent looks the name up
// (bounded by PAC_DNS_TIMEOUT_MS), and FindProxyForURL runs again from the start with the answer
// in hand. A PAC is a function of its arguments, the clock and DNS, so running it again is safe;
// its alert() lines are printed for the final run only. Names are looked up only when the PAC
// asks: a PAC that decides by domain never waits for a DNS that corporate networks often do not
// answer for outside names.

import net from "node:net";
import { PAC_DNS_TIMEOUT_MS, PAC_MAX_LOOKUPS, PAC_MEMORY_LIMIT, PAC_TIME_LIMIT_MS } from "@burrow/protocol";
import { PacError } from "./answer.ts";
import * as helpers from "./helpers.ts";
import { loadQuickJs, type QuickJSContext, type QuickJSHandle, type QuickJSWASMModule } from "./quickjs.ts";

/** What the sandbox's helpers may ask of the machine; tests pass their own. */
export interface PacHost {
  /** Every address of `name` (the runtime's resolver, as node:dns lookup), or [] when it does not resolve. */
  lookup(name: string): Promise<string[]>;
  /** The machine's own addresses, the first non-internal IPv4 first (myIpAddress answers it). */
  addresses(): string[];
  /** A line the PAC's alert() wrote. */
  alert(message: string): void;
  now(): Date;
}

let engine: Promise<QuickJSWASMModule> | undefined;

/** QuickJS, loaded once per process. */
function quickjs(): Promise<QuickJSWASMModule> {
  engine ??= loadQuickJs();
  return engine;
}

/** Thrown inside the sandbox for a name not looked up yet (see the comment at the top). */
const PENDING = "burrow: DNS lookup pending";

/** What FindProxyForURL answered, and the helper calls that led there (for `agent doctor`). */
export interface PacEvaluation {
  /** E.g. "PROXY a:3128; DIRECT". */
  answer: string;
  /** The helpers it called and what they returned, in order: `dnsDomainIs("x.corp", ".corp") = true`. */
  trace: string[];
}

/** Helper calls kept in a trace: enough to see which rule decided. */
const MAX_TRACE = 24;

/**
 * Runs the PAC file's FindProxyForURL(url, host).
 * @throws {PacError} for a syntax error, an exception, the time or memory limit, a missing
 *   FindProxyForURL, an answer that is not a string, or too many names to look up.
 */
export async function findProxyForUrl(script: string, url: string, host: string, machine: PacHost): Promise<PacEvaluation> {
  const module = await quickjs();
  const known = new Map<string, string[]>();
  for (;;) {
    const pending = new Set<string>();
    const alerts: string[] = [];
    const trace: string[] = [];
    const state: RunState = { machine, known, pending, alerts, trace };
    const outcome = runOnce(module, script, url, host, state);
    // The machine failed a helper (Deno without --allow-sys=networkInterfaces, say): that is no
    // fault of the PAC's, and its own error says what to do.
    if (state.hostError !== undefined) throw state.hostError;
    if (pending.size === 0) {
      for (const line of alerts) machine.alert(line);
      if ("error" in outcome) throw new PacError(outcome.error);
      return { answer: outcome.value, trace };
    }
    if (known.size + pending.size > PAC_MAX_LOOKUPS) {
      throw new PacError(
        `the PAC file looks up more than ${PAC_MAX_LOOKUPS} names for one URL (PAC_MAX_LOOKUPS): ${[...known.keys(), ...pending].join(", ")}`,
      );
    }
    await Promise.all(
      [...pending].map(async (name) => {
        known.set(name, await lookupWithin(machine, name));
      }),
    );
  }
}

async function lookupWithin(machine: PacHost, name: string): Promise<string[]> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string[]>((resolve) => {
    timer = setTimeout(() => resolve([]), PAC_DNS_TIMEOUT_MS);
  });
  try {
    return await Promise.race([machine.lookup(name).catch(() => []), late]);
  } finally {
    clearTimeout(timer);
  }
}

interface RunState {
  machine: PacHost;
  known: Map<string, string[]>;
  pending: Set<string>;
  alerts: string[];
  trace: string[];
  /** An error the machine threw from a helper (not the PAC's doing). */
  hostError?: unknown;
}

type Outcome = { value: string } | { error: string };

function runOnce(module: QuickJSWASMModule, script: string, url: string, host: string, state: RunState): Outcome {
  const runtime = module.newRuntime();
  const deadline = Date.now() + PAC_TIME_LIMIT_MS;
  let interrupted = false;
  runtime.setInterruptHandler(() => {
    interrupted ||= Date.now() > deadline;
    return interrupted;
  });
  runtime.setMemoryLimit(PAC_MEMORY_LIMIT);
  runtime.setMaxStackSize(512 * 1024);
  const context = runtime.newContext();
  try {
    installHelpers(context, state);
    const describeError = (handle: QuickJSHandle): string => {
      const error = context.dump(handle) as { name?: string; message?: string; stack?: string } | string;
      handle.dispose();
      if (interrupted) return `the PAC file ran longer than ${PAC_TIME_LIMIT_MS / 1000}s (PAC_TIME_LIMIT_MS) and was stopped`;
      if (typeof error !== "object" || error === null) return `the PAC file threw ${JSON.stringify(error)}`;
      if (/out of memory/i.test(error.message ?? "")) {
        return `the PAC file used more than ${PAC_MEMORY_LIMIT / 1024 / 1024} MiB (PAC_MEMORY_LIMIT) and was stopped`;
      }
      const where = /\((proxy\.pac:\d+)/.exec(error.stack ?? "")?.[1];
      return `the PAC file failed: ${error.name ?? "Error"}: ${error.message ?? ""}${where ? ` (${where})` : ""}`;
    };
    const loaded = context.evalCode(script, "proxy.pac");
    if (loaded.error) return { error: describeError(loaded.error) };
    loaded.value.dispose();
    const find = context.getProp(context.global, "FindProxyForURL");
    try {
      if (context.typeof(find) !== "function") return { error: "the PAC file defines no function FindProxyForURL(url, host)" };
      const args = [context.newString(url), context.newString(host)];
      const result = context.callFunction(find, context.undefined, ...args);
      for (const arg of args) arg.dispose();
      if (result.error) return { error: describeError(result.error) };
      const type = context.typeof(result.value);
      const value = context.dump(result.value);
      result.value.dispose();
      if (type !== "string") {
        return {
          error: `FindProxyForURL answered ${type === "undefined" ? "undefined" : `${JSON.stringify(value) ?? type} (a ${type})`}, not a string such as "PROXY host:port; DIRECT"`,
        };
      }
      return { value: value as string };
    } finally {
      find.dispose();
    }
  } finally {
    context.dispose();
    runtime.dispose();
  }
}

type Helper = (...args: unknown[]) => string | number | boolean | null;

function installHelpers(context: QuickJSContext, state: RunState): void {
  const { machine, known, pending, alerts, trace } = state;
  /** The addresses of `name`: itself for an IP literal, else what DNS said (or a pending lookup). */
  const addressesOf = (name: unknown): string[] => {
    const text = String(name);
    if (net.isIP(text)) return [text];
    const found = known.get(text);
    if (found) return found;
    pending.add(text);
    throw new Error(PENDING);
  };
  const ipv4Of = (name: unknown) => addressesOf(name).find((address) => net.isIPv4(address)) ?? null;
  const own = () => machine.addresses();
  const table: Record<string, Helper> = {
    isPlainHostName: (host) => helpers.isPlainHostName(String(host)),
    dnsDomainIs: (host, domain) => helpers.dnsDomainIs(String(host), String(domain)),
    localHostOrDomainIs: (host, hostdom) => helpers.localHostOrDomainIs(String(host), String(hostdom)),
    dnsDomainLevels: (host) => helpers.dnsDomainLevels(String(host)),
    shExpMatch: (text, pattern) => helpers.shExpMatch(String(text), String(pattern)),
    convert_addr: (ip) => helpers.convert_addr(String(ip)),
    isResolvable: (host) => ipv4Of(host) !== null,
    dnsResolve: (host) => ipv4Of(host),
    isInNet: (host, pattern, mask) => helpers.isInNetAddress(ipv4Of(host), String(pattern), String(mask)),
    myIpAddress: () => own().find((address) => net.isIPv4(address)) ?? "127.0.0.1",
    weekdayRange: (...args) => helpers.weekdayRange(machine.now(), ...args),
    dateRange: (...args) => helpers.dateRange(machine.now(), ...args),
    timeRange: (...args) => helpers.timeRange(machine.now(), ...args),
    alert: (message) => {
      alerts.push(String(message));
      return null;
    },
    // Microsoft's IPv6 extensions: every address, ";"-separated ("" when none).
    isResolvableEx: (host) => addressesOf(host).length > 0,
    dnsResolveEx: (host) => addressesOf(host).join(";"),
    myIpAddressEx: () => own().join(";"),
    isInNetEx: (host, prefix) => addressesOf(host).some((address) => helpers.inPrefix(address, String(prefix))),
    sortIpAddressList: (list) => helpers.sortIpAddressList(String(list)),
    getClientVersion: () => "1.0",
  };
  for (const [name, helper] of Object.entries(table)) {
    const handle = context.newFunction(name, (...handles) => {
      const args = handles.map((h) => context.dump(h));
      let value: ReturnType<Helper>;
      try {
        value = helper(...args);
      } catch (error) {
        if ((error as Error)?.message !== PENDING) state.hostError ??= error;
        throw error;
      }
      if (trace.length < MAX_TRACE && name !== "alert") {
        trace.push(`${name}(${args.map((arg) => JSON.stringify(arg)).join(", ")}) = ${JSON.stringify(value)}`);
      }
      if (value === null) return context.null;
      if (typeof value === "boolean") return value ? context.true : context.false;
      if (typeof value === "number") return context.newNumber(value);
      return context.newString(value);
    });
    context.setProp(context.global, name, handle);
    handle.dispose();
  }
}
