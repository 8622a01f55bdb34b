import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AgentProcess, agentCommand, type RuntimeName } from "../_agent.ts";
import { Origin } from "../_origin.ts";
import { Relay, ROOT } from "../_relay.ts";
import { at, visit } from "../_visit.ts";

const TOKEN = "login-test-token-1";

let relay: Relay;
let open: Relay;
let origin: Origin;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  [relay, open, origin] = await Promise.all([
    Relay.start({ vars: { BURROW_TOKENS: `alice:${TOKEN}` } }),
    Relay.start(),
    Origin.start(),
  ]);
}, 90_000);

afterAll(async () => {
  await Promise.all([relay?.dispose(), open?.dispose(), origin?.close()]);
});

afterEach(async () => {
  await Promise.all(agents.splice(0).map((agent) => agent.stop("SIGKILL")));
});

/** A config directory of its own, as XDG_CONFIG_HOME. */
function configHome(): string {
  return mkdtempSync(join(tmpdir(), "burrow-login-test-"));
}

/** Runs the agent from the sources with `input` on its stdin (a pipe, not a terminal), to its end. */
function runWith(
  args: string[],
  input: string,
  env: NodeJS.ProcessEnv,
  runtime: RuntimeName = "node",
): Promise<{ status: number | null; output: string }> {
  const [command, argv] = agentCommand(runtime, args);
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
  const child = spawn(command, argv, { cwd: ROOT, env: { ...base, ...env }, stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  child.stdin.end(input);
  return new Promise((resolve) => child.on("close", (status) => resolve({ status, output: output.trim() })));
}

const login = (relayUrl: string, input: string, home: string, runtime: RuntimeName = "node") =>
  runWith(["login", "--relay", relayUrl], input, { XDG_CONFIG_HOME: home }, runtime);

describe("agent login and logout", () => {
  it.each(["node", "bun"] as const)(
    "on %s, checks the relay and the token read from stdin, saves both in a 0600 file, and the next agent needs only --port",
    async (runtime) => {
      const home = configHome();
      const { status, output } = await login(relay.url, `${TOKEN}\n`, home, runtime);
      expect(status, output).toBe(0);
      expect(output).toContain(`http://localhost:${relay.port} is a Burrow relay, and it accepted the token`);
      const file = join(home, "burrow", "config.toml");
      expect(output).toContain(`saved to ${file}`);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, "utf8")).toContain(`relay = "${relay.url}"\ntoken = "${TOKEN}"\n`);

      const agent = await AgentProcess.start("node", ["--port", String(origin.port), "--inspect", "false"], {
        XDG_CONFIG_HOME: home,
      });
      agents.push(agent);
      expect(agent.url).toContain(`localhost:${relay.port}`);
      expect((await visit(at(agent.url, "/status/201"))).status).toBe(201);
    },
  );

  it("lets agent doctor check the saved relay and token with no flag", async () => {
    const home = configHome();
    expect((await login(relay.url, `${TOKEN}\n`, home)).status).toBe(0);
    const { status, output } = await runWith(["doctor"], "", { XDG_CONFIG_HOME: home });
    expect(status, output).toBe(0);
    expect(output).toContain(`relay: http://localhost:${relay.port}`);
    expect(output).toMatch(/^ok\s+https\s+session opened and polled/m);
  });

  it("refuses a wrong token with exit 3 and saves nothing", async () => {
    const home = configHome();
    const { status, output } = await login(relay.url, "not-the-token\n", home);
    expect(status, output).toBe(3);
    expect(output).toContain(`error: http://localhost:${relay.port} refused this token (401 unauthorized); nothing was saved`);
    expect(existsSync(join(home, "burrow", "config.toml"))).toBe(false);
  });

  it("never takes the token from a flag", async () => {
    const home = configHome();
    const { status, output } = await runWith(["login", "--relay", relay.url, "--token", TOKEN], "", { XDG_CONFIG_HOME: home });
    expect(status).toBe(2);
    expect(output).toContain("error: agent login reads the token from a prompt or stdin, not --token");
    expect(existsSync(join(home, "burrow", "config.toml"))).toBe(false);
  });

  it("says a token is needed when stdin is empty on a relay that requires one", async () => {
    const { status, output } = await login(relay.url, "", configHome());
    expect(status, output).toBe(2);
    expect(output).toContain(`error: http://localhost:${relay.port} requires a token, and none was given`);
  });

  it("stops reading a token line longer than any token, and saves nothing", async () => {
    const home = configHome();
    const { status, output } = await login(relay.url, "x".repeat(100_000), home);
    expect(status, output).toBe(2);
    expect(output).toContain("error: the token's line is over 4096 characters, longer than any token");
    expect(existsSync(join(home, "burrow", "config.toml"))).toBe(false);
  });

  it("saves an open relay with no token for an empty line", async () => {
    const home = configHome();
    const { status, output } = await login(open.url, "\n", home);
    expect(status, output).toBe(0);
    expect(output).toContain("is a Burrow relay, and open: it needs no token");
    expect(readFileSync(join(home, "burrow", "config.toml"), "utf8")).not.toContain("token =");
  });

  it("exits 5 for a server that is not a Burrow relay, and saves nothing", async () => {
    const server = http.createServer((_, response) =>
      response.writeHead(200, { "content-type": "text/html" }).end("<h1>Hi</h1>"),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const home = configHome();
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const { status, output } = await login(url, `${TOKEN}\n`, home);
    server.close();
    expect(status, output).toBe(5);
    expect(output).toContain(`error: not a Burrow relay: ${url}/_burrow/info answered 200 with text/html, not JSON`);
    expect(existsSync(join(home, "burrow", "config.toml"))).toBe(false);
  });

  it("sends the saved token to the saved relay only, never to another given by --relay", async () => {
    const seen: (string | undefined)[] = [];
    const other = http.createServer((request, response) => {
      seen.push(request.headers.authorization);
      response.writeHead(503).end();
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    const otherUrl = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    /** The Authorization headers `other` gets from an agent run with a config.toml saved for `saved`. */
    const headersSent = async (saved: string, extra: string[]) => {
      const home = configHome();
      mkdirSync(join(home, "burrow"));
      writeFileSync(join(home, "burrow", "config.toml"), `relay = "${saved}"\ntoken = "${TOKEN}"\n`, { mode: 0o600 });
      seen.length = 0;
      const agent = new AgentProcess("node", ["--port", "80", "--transport", "https", "--inspect", "false", ...extra], {
        XDG_CONFIG_HOME: home,
      });
      agents.push(agent);
      await agent.waitFor(/reconnecting|error/);
      await agent.stop("SIGKILL");
      return [...seen];
    };
    try {
      expect(await headersSent(otherUrl, [])).toContain(`Bearer ${TOKEN}`);
      const elsewhere = await headersSent(relay.url, ["--relay", otherUrl]);
      expect(elsewhere.length).toBeGreaterThan(0);
      expect(elsewhere.every((header) => header === undefined)).toBe(true);
    } finally {
      other.close();
    }
  });

  it("warns when others can read the saved token, and logout removes it", async () => {
    const home = configHome();
    expect((await login(relay.url, `${TOKEN}\n`, home)).status).toBe(0);
    const file = join(home, "burrow", "config.toml");
    chmodSync(file, 0o644);
    const warned = await runWith(["--port", "80", "--name", "api"], "", { XDG_CONFIG_HOME: home });
    expect(warned.output).toContain(
      `warning: ${file} holds a token and other users can read it (mode 644): run chmod 600 ${file}`,
    );
    const out = await runWith(["logout"], "", { XDG_CONFIG_HOME: home });
    expect(out).toEqual({ status: 0, output: `removed ${file}: the relay and token saved by \`agent login\` are forgotten` });
    expect(existsSync(file)).toBe(false);
  });

  it("names the file, line and key of a bad value in config.toml", async () => {
    const home = configHome();
    mkdirSync(join(home, "burrow"));
    writeFileSync(join(home, "burrow", "config.toml"), 'relay = "ftp://x"\ntokn = "y"\n', { mode: 0o600 });
    const { status, output } = await runWith(["--port", "80"], "", { XDG_CONFIG_HOME: home });
    expect(status).toBe(2);
    expect(output).toContain(
      `error: ${join(home, "burrow", "config.toml")} line 2, key tokn: is not a setting; did you mean token?`,
    );
  });

  it("reads the token at a terminal prompt without echoing it", async () => {
    const home = configHome();
    const [command, argv] = agentCommand("node", ["login", "--relay", relay.url]);
    const line = [command, ...argv].map((arg) => `'${arg}'`).join(" ");
    // script(1) runs the agent on a pseudo-terminal, as a user's shell would.
    const { status, output } = await runWithScript(line, `${TOKEN}\r`, { XDG_CONFIG_HOME: home });
    expect(status, output).toBe(0);
    expect(output).toContain("token: ");
    expect(output).not.toContain(TOKEN);
    expect(readFileSync(join(home, "burrow", "config.toml"), "utf8")).toContain(`token = "${TOKEN}"`);
  });

  it("logs in and serves on Deno under the task's permissions (config.toml under $HOME/.config/burrow)", async () => {
    const home = mkdtempSync(join(tmpdir(), "burrow-login-home-"));
    const env = { HOME: home, XDG_CONFIG_HOME: "", DENO_DIR: process.env.DENO_DIR ?? join(homedir(), ".cache", "deno") };
    const { status, output } = await runWith(["login", "--relay", relay.url], `${TOKEN}\n`, env, "deno");
    expect(status, output).toBe(0);
    expect(statSync(join(home, ".config", "burrow", "config.toml")).mode & 0o777).toBe(0o600);
    const agent = await AgentProcess.start("deno", ["--port", String(origin.port), "--inspect", "false"], env);
    agents.push(agent);
    expect((await visit(at(agent.url, "/status/201"))).status).toBe(201);
  });
});

/** Runs `command` under script(1) on a pseudo-terminal, typing `input` into it. */
function runWithScript(
  command: string,
  input: string,
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; output: string }> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("BURROW_")));
  const child = spawn("script", ["-qec", command, "/dev/null"], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => {
    output += chunk;
    // Type only once the prompt is up: script would otherwise echo what it got before raw mode.
    if (output.includes("token: ") && input) {
      child.stdin.write(input);
      input = "";
    }
  });
  child.stderr.on("data", (chunk) => (output += chunk));
  return new Promise((resolve) => child.on("close", (status) => resolve({ status, output })));
}
