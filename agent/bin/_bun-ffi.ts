// Bun's FFI (bun:ffi), for the agent on Bun and the single executable (bun build --compile
// keeps bun:ffi). Pointers are plain numbers in Bun: below 2^53 on every 64-bit system Bun
// supports, so converting an address from and to bigint loses nothing.
import { CString, dlopen, FFIType, ptr, toArrayBuffer } from "bun:ffi";
import type { Ffi, NativeArg, NativeLibrary, NativeSignature } from "../src/runtime.ts";

const TYPES = { u32: FFIType.u32, i32: FFIType.i32, pointer: FFIType.ptr } as const;

function argument(value: NativeArg): number | ArrayBufferView | null {
  if (typeof value === "bigint") return value === 0n ? null : Number(value);
  return value;
}

export const bunFfi: Ffi = {
  os: process.platform,
  arch: process.arch,
  open(paths: readonly string[], symbols: Readonly<Record<string, NativeSignature>>): NativeLibrary {
    const definitions = Object.fromEntries(
      Object.entries(symbols).map(([name, { args, returns }]) => [
        name,
        { args: args.map((type) => TYPES[type]), returns: TYPES[returns] },
      ]),
    );
    const failures: string[] = [];
    for (const path of paths) {
      try {
        const library = dlopen(path, definitions);
        const functions = library.symbols as unknown as Record<string, (...args: unknown[]) => number>;
        return {
          call: (symbol, args) => functions[symbol]!(...args.map(argument)),
          close: () => library.close(),
        };
      } catch (error) {
        failures.push(`${path}: ${(error as Error).message}`);
      }
    }
    throw new Error(`cannot load ${failures.join("; ")}`);
  },
  address: (view) => BigInt(ptr(view)),
  read: (address, length) => new Uint8Array(toArrayBuffer(Number(address), 0, length).slice(0)),
  readCString: (address) => new CString(Number(address)).toString(),
};
