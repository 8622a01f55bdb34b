import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseArgs } from "../../agent/src/flags.ts";
import { dial, type NetConfig, NetworkError } from "../../agent/src/net/dial.ts";
import { PacProxies } from "../../agent/src/net/pac/pac.ts";
import { pacSettings } from "../../agent/src/net/pac/settings.ts";

// The PAC's choices as the dial takes them, against real sockets on 127.0.0.1: a target that
// answers "hello", CONNECT proxies that let through or ask for credentials, a port where nothing
// listens.

const servers: net.Server[] = [];
const listen = async (onSocket: (socket: net.Socket) => void): Promise<number> => {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    onSocket(socket);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
};

/** A CONNECT proxy answering `status`; 200 then carries the bytes to the target. */
const proxy = (status: string, connects: string[] = []) =>
  listen((socket) => {
    socket.once("data", (head) => {
      const target = /^CONNECT (\S+)/.exec(head.toString())?.[1] ?? "";
      connects.push(target);
      if (!status.startsWith("200"))
        return socket.end(`HTTP/1.1 ${status}\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n`);
      socket.write(`HTTP/1.1 ${status}\r\n\r\n`);
      const [host, port] = target.split(":");
      const upstream = net.connect(Number(port), host!);
      upstream.on("error", () => socket.destroy());
      socket.pipe(upstream).pipe(socket);
    });
  });

let target: number;
let down: number;
const dir = mkdtempSync(join(tmpdir(), "burrow-pac-dial-"));

beforeAll(async () => {
  target = await listen((socket) => socket.end("hello"));
  down = await listen(() => {});
  // A port that was listening and is no longer: connection refused.
  await new Promise((resolve) => servers.pop()!.close(resolve));
});

afterAll(() => {
  for (const server of servers) server.close();
  rmSync(dir, { recursive: true, force: true });
});

const read = (socket: NodeJS.ReadableStream) =>
  new Promise<string>((resolve) => {
    let text = "";
    socket.on("data", (chunk) => (text += chunk));
    socket.on("end", () => resolve(text));
  });

/** Dials the target with `pac` as the PAC file (its text), collecting the notes. */
async function dialWith(pac: string, notes: string[], options: { wpad?: boolean; target?: number } = {}) {
  const file = join(dir, `${notes.length}-${Math.random().toString(36).slice(2)}.pac`);
  writeFileSync(file, pac);
  const settings = {
    location: file,
    source: "--proxy-pac",
    wpad: options.wpad ?? false,
    ca: [],
    timeoutMs: 2000,
    note: (line: string) => notes.push(line),
  };
  const proxies = new PacProxies(settings);
  const config: NetConfig = {
    proxy: undefined,
    pac: proxies,
    note: (line) => notes.push(line),
    ca: [],
    insecure: false,
    timeoutMs: 2000,
  };
  return dial(new URL(`http://127.0.0.1:${options.target ?? target}/`), config);
}

describe("a PAC's choices, dialed in order", () => {
  it("says each proxy that cannot be reached in one line and takes the next", async () => {
    const connects: string[] = [];
    const good = await proxy("200 Connection established", connects);
    const notes: string[] = [];
    const socket = await dialWith(
      `function FindProxyForURL() { return "PROXY 127.0.0.1:${down}; PROXY 127.0.0.1:${good}; DIRECT"; }`,
      notes,
    );
    expect(await read(socket)).toBe("hello");
    expect(connects).toEqual([`127.0.0.1:${target}`]);
    expect(notes).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^cannot reach the proxy http://127\\.0\\.0\\.1:${down} \\(from the PAC file\\): connection refused.*; trying 127\\.0\\.0\\.1:${good}$`,
        ),
      ),
    );
  });

  it("goes DIRECT when every proxy before it is down", async () => {
    const notes: string[] = [];
    const socket = await dialWith(`function FindProxyForURL() { return "PROXY 127.0.0.1:${down}; DIRECT"; }`, notes);
    expect(await read(socket)).toBe("hello");
    expect(notes.at(-1)).toMatch(/; trying DIRECT$/);
  });

  it("says the PAC sent it DIRECT when the relay cannot be reached that way", async () => {
    const notes: string[] = [];
    const failure = await dialWith(`function FindProxyForURL() { return "PROXY 127.0.0.1:${down}; DIRECT"; }`, notes, {
      target: down,
    }).catch((e) => e);
    expect(failure).toMatchObject({
      step: "relay",
      fatal: false,
      message: expect.stringMatching(/ \(the PAC file says DIRECT\)$/),
    });
    expect(failure.hint).toMatch(/^the PAC file sends this relay directly/);
  });

  it("stops at a proxy that refuses the credentials, never falling through to DIRECT", async () => {
    const refusing = await proxy("407 Proxy Authentication Required");
    const notes: string[] = [];
    const failure = await dialWith(`function FindProxyForURL() { return "PROXY 127.0.0.1:${refusing}; DIRECT"; }`, notes).catch(
      (e) => e,
    );
    expect(failure).toBeInstanceOf(NetworkError);
    expect(failure).toMatchObject({ fatal: true, message: expect.stringMatching(/requires credentials \(407/) });
    expect(notes.some((line) => line.includes("trying"))).toBe(false);
  });

  it("makes a PAC that throws a fatal error at the proxy step, with a hint", async () => {
    const failure = await dialWith("function FindProxyForURL() { throw new Error('broken'); }", []).catch((e) => e);
    expect(failure).toMatchObject({ step: "proxy", fatal: true, message: expect.stringMatching(/Error: broken/) });
    expect(failure.hint).toMatch(/--proxy http:\/\/HOST:PORT \(or --proxy none\) overrides it/);
  });
});

describe("proxy credentials for the proxies a PAC names", () => {
  /** A CONNECT proxy that wants Basic x:y, answering each request of a keep-alive connection. */
  const basicProxy = (seen: string[]) =>
    listen((socket) => {
      let buffer = "";
      socket.on("data", (chunk) => {
        buffer += chunk;
        for (let end = buffer.indexOf("\r\n\r\n"); end >= 0; end = buffer.indexOf("\r\n\r\n")) {
          const head = buffer.slice(0, end);
          buffer = buffer.slice(end + 4);
          const auth = /^proxy-authorization: (.*)$/im.exec(head)?.[1]?.trim();
          seen.push(auth ?? "none");
          if (auth !== `Basic ${Buffer.from("x:y").toString("base64")}`) {
            socket.write(
              'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n',
            );
            continue;
          }
          socket.removeAllListeners("data");
          socket.write("HTTP/1.1 200 Connection established\r\n\r\n");
          const upstream = net.connect(target, "127.0.0.1");
          upstream.on("error", () => socket.destroy());
          socket.pipe(upstream).pipe(socket);
        }
      });
    });
  const credentialsFor = () => ({ user: "x", password: "y", source: "BURROW_PROXY_USER and BURROW_PROXY_PASSWORD" });

  async function dialVia(settings: Parameters<typeof pacSettings>[0], port: number) {
    const file = join(dir, `creds-${port}-${Math.random().toString(36).slice(2)}.pac`);
    writeFileSync(file, `function FindProxyForURL() { return "PROXY localhost:${port}"; }`);
    const log = { info: () => {}, warn: () => {} };
    const wpad = settings.proxy === "auto";
    const pac = pacSettings(wpad ? settings : { ...settings, "proxy-pac": file }, () => undefined, {
      ca: [],
      timeoutMs: 2000,
      log,
    })!;
    // WPAD's PAC, here from a file rather than http://wpad/.
    if (wpad) Object.assign(pac.settings, { location: file });
    const config: NetConfig = { proxy: undefined, pac, ca: [], insecure: false, timeoutMs: 2000, credentialsFor };
    return dial(new URL(`http://127.0.0.1:${target}/`), config);
  }

  it("sends them to the proxies of a PAC the user gave", async () => {
    const seen: string[] = [];
    const socket = await dialVia({}, await basicProxy(seen));
    expect(await read(socket)).toBe("hello");
    expect(seen.at(-1)).toMatch(/^Basic /);
  });

  it("sends them to a proxy WPAD found only when its host is named, and says how to name it", async () => {
    const seen: string[] = [];
    const port = await basicProxy(seen);
    const failure = await dialVia({ proxy: "auto" }, port).catch((e) => e);
    expect(failure).toMatchObject({
      fatal: true,
      hint: "credentials go to a proxy that WPAD found only when you name its host: --proxy-credentials-for localhost",
    });
    expect(seen.every((auth) => auth === "none")).toBe(true);
    const socket = await dialVia({ proxy: "auto", "proxy-credentials-for": "localhost" }, port);
    expect(await read(socket)).toBe("hello");
    expect(seen.at(-1)).toMatch(/^Basic /);
  });
});

describe("PAC settings", () => {
  const log = { info: () => {}, warn: () => {} };
  const base = { ca: [], timeoutMs: 1000, log };

  it("lets WPAD's PAC proxies have credentials only when their host is named", () => {
    const named = pacSettings({ "proxy-pac": "./proxy.pac" }, () => undefined, base)!;
    expect(named.mayAuthenticate("any.proxy")).toBe(true);
    const wpad = pacSettings(
      { proxy: "auto", "proxy-credentials-for": "proxy.corp.example, other.example" },
      () => undefined,
      base,
    )!;
    expect(wpad.settings).toMatchObject({ wpad: true, location: "http://wpad/wpad.dat", source: "--proxy auto" });
    expect(wpad.mayAuthenticate("PROXY.corp.example")).toBe(true);
    expect(wpad.mayAuthenticate("rogue.example")).toBe(false);
  });

  it("lets --proxy override a PAC, refuses --proxy auto with --proxy-pac and a PAC that is no URL or file", () => {
    const warnings: string[] = [];
    expect(
      pacSettings({ proxy: "none", "proxy-pac": "./p.pac" }, () => undefined, {
        ...base,
        log: { ...log, warn: (l) => warnings.push(l) },
      }),
    ).toBeUndefined();
    expect(warnings[0]).toMatch(/--proxy none is given: the PAC file \.\/p\.pac is not used/);
    expect(() => pacSettings({ proxy: "auto", "proxy-pac": "./p.pac" }, () => undefined, base)).toThrow(/both given/);
    expect(() => pacSettings({ "proxy-pac": "ftp://x/p.pac" }, () => undefined, base)).toThrow(
      /neither an http\(s\):\/\/ URL nor a file/,
    );
    expect(
      pacSettings({ "proxy-pac": "http://x/p.pac" }, (n) => (n === "BURROW_PROXY_PAC" ? "http://x/p.pac" : undefined), base)
        ?.settings.source,
    ).toBe("BURROW_PROXY_PAC");
  });

  it("reads proxy-pac from burrow.toml, a path relative to the file or a URL as it is", () => {
    const toml = join(dir, "burrow.toml");
    writeFileSync(toml, 'proxy-pac = "pac/proxy.pac"\n');
    expect(parseArgs(["--config", toml], () => undefined).values["proxy-pac"]).toBe(join(dir, "pac/proxy.pac"));
    writeFileSync(toml, 'proxy-pac = "http://wpad.corp.example/proxy.pac"\nproxy-credentials-for = "proxy.corp.example"\n');
    expect(parseArgs(["--config", toml], () => undefined).values).toMatchObject({
      "proxy-pac": "http://wpad.corp.example/proxy.pac",
      "proxy-credentials-for": "proxy.corp.example",
    });
    expect(
      parseArgs(
        [],
        (name) => (name === "BURROW_PROXY_PAC" ? "./x.pac" : undefined),
        () => undefined,
      ).values["proxy-pac"],
    ).toBe("./x.pac");
  });

  it("goes directly when WPAD finds no PAC file, and says so", async () => {
    const notes: string[] = [];
    const proxies = new PacProxies({
      location: `http://127.0.0.1:${down}/wpad.dat`,
      source: "--proxy auto",
      wpad: true,
      ca: [],
      timeoutMs: 1000,
      note: (line) => notes.push(line),
    });
    const decision = await proxies.decide(new URL("https://relay.example.com"));
    expect(decision).toMatchObject({ location: undefined, answer: "DIRECT", choices: [undefined] });
    expect(notes).toEqual([expect.stringMatching(/^WPAD: no PAC file \(cannot fetch the PAC file .*\); connecting directly$/)]);
  });
});
