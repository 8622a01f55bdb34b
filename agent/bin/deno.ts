// Deno: signals through Deno.addSignalListener, and permissions: `deno task agent` grants
// network access, reading files (the CA files the user names) and the agent's own environment
// variables only, and a missing grant becomes a message naming the flag to add.
import { main } from "../src/cli.ts";
import type { Runtime } from "../src/runtime.ts";

const runtime: Runtime = {
  description: `deno ${Deno.version.deno}`,
  env: (name) => Deno.env.get(name),
  onStop(handler) {
    Deno.addSignalListener("SIGINT", handler);
    Deno.addSignalListener("SIGTERM", handler);
    // Windows has no SIGHUP, and Deno throws for a signal the platform lacks.
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", handler);
  },
  exit: (code) => Deno.exit(code),
  terminal: {
    isTTY: Deno.stdout.isTerminal(),
    // Deno reads NO_COLOR itself, so no --allow-env grant is needed for it.
    noColor: Deno.noColor,
    size() {
      try {
        return Deno.consoleSize();
      } catch {
        return { columns: 0, rows: 0 };
      }
    },
    onResize(handler) {
      if (Deno.build.os !== "windows") Deno.addSignalListener("SIGWINCH", handler);
    },
    write(text) {
      // writeSync may write less than it was given.
      const bytes = new TextEncoder().encode(text);
      for (let done = 0; done < bytes.length; ) done += Deno.stdout.writeSync(bytes.subarray(done));
    },
  },
  // Deno.dlopen, for Negotiate's GSSAPI: only under --allow-ffi (`deno task agent-negotiate`).
  ffi: async () => (await import("./_deno-ffi.ts")).denoFfi(),
  // `agent relay` only (`deno task relay`).
  relayServer: async () => (await import("@burrow/edge/selfhost/deno")).serveDeno,
  listenDenied(host, port) {
    const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    const { state } = Deno.permissions.querySync({ name: "net", host: address });
    return state === "granted" ? undefined : `Deno did not grant net access to ${address}`;
  },
  explain(error) {
    if (!(error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied)) return undefined;
    const flag = /--allow-[a-z]+/.exec(error.message)?.[0] ?? "the --allow-* flag it names";
    return {
      message: `Deno did not grant a permission the agent needs: ${error.message}`,
      hint: `run it with \`deno task agent\`, or add ${flag} to your deno run command`,
    };
  },
};

runtime.exit(await main(runtime, Deno.args));
