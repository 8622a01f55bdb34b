// Deno's FFI (Deno.dlopen), which needs --allow-ffi: `deno task agent` does not grant it (the
// agent loads native code only for Negotiate proxy auth); `deno task agent-negotiate` does.
// Asking for it first (permissions.querySync) turns a missing grant into a message with the
// command, rather than a prompt or a NotCapable thrown from deep inside the proxy's handshake.
import type { Ffi, NativeArg, NativeLibrary, NativeSignature } from "../src/runtime.ts";

function argument(value: NativeArg, type: "u32" | "i32" | "pointer"): unknown {
  if (type !== "pointer") return value;
  if (typeof value === "bigint") return Deno.UnsafePointer.create(value);
  if (typeof value === "number") return Deno.UnsafePointer.create(BigInt(value));
  return Deno.UnsafePointer.of(value as BufferSource);
}

function pointer(address: bigint): Deno.PointerObject {
  const value = Deno.UnsafePointer.create(address);
  if (value === null) throw new Error("read from a null pointer");
  return value;
}

/** Deno's FFI, or an error that says how to grant it. */
export function denoFfi(): Ffi {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw Object.assign(
      new Error("Deno did not grant --allow-ffi, which Negotiate (Kerberos) proxy auth needs to call the system's GSSAPI"),
      {
        hint: "run the agent with `deno task agent-negotiate` (the permissions of `deno task agent` and --allow-ffi), or add --allow-ffi to your deno run command",
      },
    );
  }
  return {
    os: Deno.build.os,
    // Named as Node and Bun name them.
    arch: ({ x86_64: "x64", aarch64: "arm64" } as Record<string, string>)[Deno.build.arch] ?? Deno.build.arch,
    open(paths: readonly string[], symbols: Readonly<Record<string, NativeSignature>>): NativeLibrary {
      const definitions = Object.fromEntries(
        Object.entries(symbols).map(([name, { args, returns }]) => [name, { parameters: [...args], result: returns }]),
      ) as Record<string, Deno.ForeignFunction>;
      const failures: string[] = [];
      for (const path of paths) {
        try {
          const library = Deno.dlopen(path, definitions);
          const functions = library.symbols as unknown as Record<string, (...args: unknown[]) => number>;
          return {
            call: (symbol, args) => {
              const types = symbols[symbol]!.args;
              return functions[symbol]!(...args.map((value, i) => argument(value, types[i]!)));
            },
            close: () => library.close(),
          };
        } catch (error) {
          failures.push(`${path}: ${(error as Error).message}`);
        }
      }
      throw new Error(`cannot load ${failures.join("; ")}`);
    },
    address: (view) => Deno.UnsafePointer.value(Deno.UnsafePointer.of(view as BufferSource)) as bigint,
    read: (address, length) => new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer(address), length).slice(0)),
    readCString: (address) => Deno.UnsafePointerView.getCString(pointer(address)),
  };
}
