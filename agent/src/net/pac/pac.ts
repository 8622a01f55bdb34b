// --proxy-pac and --proxy auto: which proxies the PAC file names for a URL, as ProxyConfigs that
// the dial tries in order (dial.ts). The PAC file is read once, when the first connection needs
// it, and kept; a failed read is tried again at the next connection.

import { lookup } from "node:dns/promises";
import os from "node:os";
import { WPAD_TIMEOUT_MS } from "@burrow/protocol";
import type { ProxyConfig } from "../proxy.ts";
import { describeChoice, type PacChoice, PacError, parsePacAnswer } from "./answer.ts";
import { PacFetchError, readPac } from "./fetch.ts";
import type { PacEvaluation, PacHost } from "./sandbox.ts";

/** Where WPAD looks (no DHCP option 252): the system's resolver adds its search domains to `wpad`. */
export const WPAD_URL = "http://wpad/wpad.dat";

export interface PacSettings {
  /** A URL (http:, https:, file:) or a path; WPAD_URL for --proxy auto. */
  location: string;
  /** Where the setting came from: "--proxy-pac", "BURROW_PROXY_PAC", "burrow.toml" or "--proxy auto" (WPAD). */
  source: string;
  /** True for --proxy auto: a missing PAC means DIRECT, and credentials go only to trusted hosts. */
  wpad: boolean;
  ca: string[];
  timeoutMs: number;
  /**
   * For WPAD: the proxy hosts the user named (--proxy-credentials-for) that may be sent the
   * proxy credentials (BURROW_PROXY_USER...). A PAC the user named trusts every proxy it names.
   */
  credentialHosts?: string[];
  /** One line to the user: a changed answer, an unusable item, WPAD's finding. */
  note?: (line: string) => void;
}

/** What the PAC decided for one URL: a choice is a proxy, or undefined for DIRECT. */
export interface PacDecision {
  /** The PAC file's location (WPAD: the URL it was found at), or undefined when WPAD found none. */
  location: string | undefined;
  answer: string;
  choices: (ProxyConfig | undefined)[];
  trace: string[];
  skipped: string[];
}

/** The NetworkError-like failure of a PAC: fatal when it would fail the same on every retry. */
export class PacFailure extends Error {
  override readonly name = "PacFailure";

  constructor(
    message: string,
    readonly hint: string,
    readonly fatal: boolean,
  ) {
    super(message);
  }
}

/** The machine as a PAC file sees it: the runtime's resolver and the interfaces' addresses. */
export const machinePacHost: PacHost = {
  async lookup(name) {
    return (await lookup(name, { all: true })).map((entry) => entry.address);
  },
  // os.networkInterfaces() reads the addresses the kernel has: no packet is sent (unlike
  // pac-resolver's myIpAddress, which connects to a public DNS server to learn its own address).
  // Deno needs --allow-sys=networkInterfaces for it.
  addresses() {
    const all = Object.values(os.networkInterfaces()).flatMap((list) => list ?? []);
    const outside = all.filter((entry) => !entry.internal);
    const ordered = [...outside.filter((e) => e.family === "IPv4"), ...outside.filter((e) => e.family !== "IPv4")];
    return ordered.map((entry) => entry.address.split("%")[0]!);
  },
  alert: () => undefined,
  now: () => new Date(),
};

export class PacProxies {
  private script: Promise<string | undefined> | undefined;
  private lastAnswer: string | undefined;

  constructor(
    readonly settings: PacSettings,
    private readonly machine: PacHost = machinePacHost,
  ) {}

  /**
   * The PAC's choices for `target`, in order.
   * @throws {PacFailure} when the PAC cannot be read or evaluated, or answers nothing usable.
   */
  async decide(target: URL): Promise<PacDecision> {
    const { settings } = this;
    const script = await this.load();
    const host = target.hostname.replace(/^\[|\]$/g, "");
    if (script === undefined) return { location: undefined, answer: "DIRECT", choices: [undefined], trace: [], skipped: [] };
    // Browsers hand the PAC the URL without its path for https: (Chrome strips it since 52).
    const url = `${target.protocol === "wss:" ? "https:" : target.protocol === "ws:" ? "http:" : target.protocol}//${target.host}/`;
    let evaluation: PacEvaluation;
    try {
      // QuickJS and the sandbox: loaded on the first PAC, never without one.
      const { findProxyForUrl } = await import("./sandbox.ts");
      evaluation = await findProxyForUrl(script, url, host, {
        ...this.machine,
        alert: (line) => settings.note?.(`PAC alert: ${line}`),
      });
    } catch (error) {
      if (!(error instanceof PacError)) throw error;
      throw new PacFailure(`${error.message} (${this.where()})`, this.fixHint(), true);
    }
    let parsed: ReturnType<typeof parsePacAnswer>;
    try {
      parsed = parsePacAnswer(evaluation.answer);
    } catch (error) {
      throw new PacFailure(`${(error as Error).message} for ${host} (${this.where()})`, this.fixHint(), true);
    }
    if (evaluation.answer !== this.lastAnswer) {
      this.lastAnswer = evaluation.answer;
      settings.note?.(`the PAC file (${this.where()}) says ${JSON.stringify(evaluation.answer)} for ${host}`);
      for (const line of parsed.skipped) settings.note?.(`skipping ${line}`);
    }
    return {
      location: settings.location,
      answer: evaluation.answer,
      choices: parsed.choices.map((choice) => this.proxyOf(choice)),
      trace: evaluation.trace,
      skipped: parsed.skipped,
    };
  }

  private where(): string {
    return `${this.settings.location}, from ${this.settings.source}`;
  }

  private fixHint(): string {
    return `fix the PAC file or ask its administrators; meanwhile --proxy http://HOST:PORT (or --proxy none) overrides it`;
  }

  /**
   * Whether the proxy credentials may go to `host`, a proxy the PAC named: always for a PAC the
   * user gave; for WPAD's, whose answer may come from anyone on the network who answers to
   * `wpad`, only for the hosts the user named.
   */
  mayAuthenticate(host: string): boolean {
    if (!this.settings.wpad) return true;
    return (this.settings.credentialHosts ?? []).includes(host.toLowerCase());
  }

  private proxyOf(choice: PacChoice): ProxyConfig | undefined {
    if (choice.kind === "direct") return undefined;
    return {
      host: choice.host,
      port: choice.port,
      // The dial asks NetConfig.credentialsFor, filtered by mayAuthenticate.
      credentials: undefined,
      display: `http://${describeChoice(choice)}`,
      source: this.settings.wpad ? "the PAC file WPAD found" : "the PAC file",
    };
  }

  /** The script, or undefined when WPAD found none (then: DIRECT). */
  private load(): Promise<string | undefined> {
    const { settings } = this;
    this.script ??= (async () => {
      try {
        const text = await readPac(settings.location, {
          ca: settings.ca,
          timeoutMs: settings.wpad ? WPAD_TIMEOUT_MS : settings.timeoutMs,
        });
        if (settings.wpad) settings.note?.(`WPAD: found a PAC file at ${settings.location}`);
        return text;
      } catch (error) {
        if (!(error instanceof PacFetchError)) throw error;
        if (settings.wpad) {
          settings.note?.(`WPAD: no PAC file (${error.message}); connecting directly`);
          return undefined;
        }
        throw new PacFailure(
          `${error.message} (from ${settings.source})`,
          error.lasting
            ? "check --proxy-pac (a URL or a file; the browser's or the system's proxy settings show the PAC's address)"
            : "the PAC's server did not answer; the agent tries again",
          error.lasting,
        );
      }
    })();
    // A read that failed for a passing reason is tried again next time.
    this.script.catch(() => {
      this.script = undefined;
    });
    return this.script;
  }
}
