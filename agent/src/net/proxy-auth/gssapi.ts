// The system's GSSAPI (RFC 2744's C bindings), called through the runtime's FFI: MIT Kerberos's
// libgssapi_krb5 on Linux and the BSDs, Heimdal's GSS.framework on macOS. It turns the ticket in
// the user's credential cache (KRB5CCNAME, or the default one) into the first token of a
// Negotiate exchange (RFC 4559) for the service HTTP@<proxy host>.
import type { Ffi, NativeLibrary, NativeSignature } from "../../runtime.ts";

/** Where the GSSAPI library is, per system. macOS ships GSS.framework instead of libgssapi_krb5. */
export function gssapiPaths(os: string): string[] {
  if (os === "darwin") return ["/System/Library/Frameworks/GSS.framework/GSS"];
  // The soname first (what libkrb5-3/libgssapi-krb5-2 installs), then the development symlink.
  return ["libgssapi_krb5.so.2", "libgssapi_krb5.so"];
}

/** The Kerberos library beside it, for the hint only (the default realm, the cache's principal). */
function krb5Paths(os: string): string[] {
  if (os === "darwin") return ["/System/Library/Frameworks/Kerberos.framework/Kerberos"];
  return ["libkrb5.so.3", "libkrb5.so"];
}

const P = "pointer";
const GSS: Record<string, NativeSignature> = {
  gss_import_name: { args: [P, P, P, P], returns: "u32" },
  gss_acquire_cred: { args: [P, P, "u32", P, "i32", P, P, P], returns: "u32" },
  gss_set_neg_mechs: { args: [P, P, P], returns: "u32" },
  gss_init_sec_context: { args: [P, P, P, P, P, "u32", "u32", P, P, P, P, P, P], returns: "u32" },
  gss_display_status: { args: [P, "u32", "i32", P, P, P], returns: "u32" },
  gss_release_buffer: { args: [P, P], returns: "u32" },
  gss_release_name: { args: [P, P], returns: "u32" },
  gss_release_cred: { args: [P, P], returns: "u32" },
  gss_delete_sec_context: { args: [P, P, P], returns: "u32" },
};

const KRB5: Record<string, NativeSignature> = {
  krb5_init_context: { args: [P], returns: "i32" },
  krb5_free_context: { args: [P], returns: "i32" },
  krb5_get_default_realm: { args: [P, P], returns: "i32" },
  krb5_free_default_realm: { args: [P, P], returns: "i32" },
  krb5_cc_default: { args: [P, P], returns: "i32" },
  krb5_cc_get_principal: { args: [P, P, P], returns: "i32" },
  krb5_cc_close: { args: [P, P], returns: "i32" },
  krb5_unparse_name: { args: [P, P, P], returns: "i32" },
  krb5_free_unparsed_name: { args: [P, P], returns: "i32" },
  krb5_free_principal: { args: [P, P], returns: "i32" },
};

// Object identifiers, DER contents without tag and length (RFC 2743, RFC 4178, RFC 1964).
const NT_HOSTBASED_SERVICE = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04]; // 1.2.840.113554.1.2.1.4
const KRB5_MECH = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02]; // 1.2.840.113554.1.2.2
const SPNEGO_MECH = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x02]; // 1.3.6.1.5.5.2

const GSS_C_INITIATE = 1;
const GSS_C_GSS_CODE = 1;
const GSS_C_MECH_CODE = 2;
const GSS_S_CONTINUE_NEEDED = 1;
/** The routine-error field of a major status (RFC 2744 section 3.9.1). */
const routineError = (major: number) => (major >>> 16) & 0xff;
const GSS_S_NO_CRED = 7;
const GSS_S_CREDENTIALS_EXPIRED = 11;

/** Why GSSAPI gave no token. `noTicket`: the cache has no valid ticket (kinit would fix it). */
export class GssError extends Error {
  override readonly name = "GssError";

  constructor(
    message: string,
    readonly noTicket: boolean,
  ) {
    super(message);
  }
}

/** The Negotiate token for one CONNECT, and the context's release. */
export interface GssToken {
  token: Uint8Array;
}

/** What Negotiate needs of the system's Kerberos. */
export interface Gssapi {
  /**
   * The first token for `service` (e.g. HTTP@proxy.corp.example): SPNEGO (RFC 4178) offering
   * Kerberos only, built from the user's ticket. Mutual authentication is not asked for: the
   * proxy's answer carries nothing the agent needs, and many proxies send no token back.
   * @throws {GssError} with GSSAPI's own words (gss_display_status).
   */
  initiate(service: string): Uint8Array;
  /** The realm and the cache's principal, for a `kinit` hint; each undefined when unknown. */
  identity(): { realm?: string; principal?: string };
  close(): void;
}

/**
 * Opens the system's GSSAPI through `ffi`.
 * @throws {Error} when no GSSAPI library loads (it names the paths tried).
 */
export function openGssapi(ffi: Ffi): Gssapi {
  // gss_set_neg_mechs (RFC 4178's negotiable mechanisms) is an extension, in MIT Kerberos since
  // 1.8 and Heimdal since 1.5: without it, SPNEGO offers every mechanism it has credentials for.
  let gss: NativeLibrary;
  let limitsMechanisms = true;
  try {
    gss = ffi.open(gssapiPaths(ffi.os), GSS);
  } catch {
    const { gss_set_neg_mechs: _, ...required } = GSS;
    gss = ffi.open(gssapiPaths(ffi.os), required);
    limitsMechanisms = false;
  }
  let krb5: NativeLibrary | undefined | null;
  // Heimdal's gssapi.h, which GSS.framework ships, packs its structs to 2 bytes on Apple's
  // ppc, i386 and x86_64 ("Compatibility with MIT Kerberos on the Mac"), not on arm64: an OID's
  // elements pointer sits at offset 4 on an Intel Mac, at 8 elsewhere. Untested on macOS.
  const packed = ffi.os === "darwin" && ffi.arch === "x64";

  // Every native buffer is kept in `keep` until the call that uses it returns.
  const oid = (bytes: number[], keep: unknown[]): Uint8Array => {
    const elements = Uint8Array.from(bytes);
    const desc = new Uint8Array(16);
    const view = new DataView(desc.buffer);
    view.setUint32(0, bytes.length, true);
    view.setBigUint64(packed ? 4 : 8, ffi.address(elements), true);
    keep.push(elements);
    return desc;
  };
  const oidSet = (oids: Uint8Array[], keep: unknown[]): BigUint64Array => {
    const stride = packed ? 12 : 16;
    const array = new Uint8Array(stride * oids.length);
    for (const [i, desc] of oids.entries()) array.set(desc.subarray(0, stride), i * stride);
    keep.push(array);
    return BigUint64Array.of(BigInt(oids.length), ffi.address(array));
  };
  /** gss_buffer_desc: { size_t length; void *value }. */
  const buffer = (bytes: Uint8Array, keep: unknown[]): BigUint64Array => {
    keep.push(bytes);
    return BigUint64Array.of(BigInt(bytes.length), bytes.length > 0 ? ffi.address(bytes) : 0n);
  };
  // The constant OIDs, made once and held as long as the library: a descriptor holds only the
  // address of its elements, which the garbage collector must not reclaim or move meanwhile.
  const held: unknown[] = [];
  const HOSTBASED = oid(NT_HOSTBASED_SERVICE, held);
  const KRB5_OID = oid(KRB5_MECH, held);
  const SPNEGO_OID = oid(SPNEGO_MECH, held);
  const KRB5_ONLY = oidSet([KRB5_OID], held);
  const SPNEGO_ONLY = oidSet([SPNEGO_OID], held);
  const minor = new Uint32Array(1);
  const call = (symbol: string, ...args: Parameters<NativeLibrary["call"]>[1]) => gss.call(symbol, [minor, ...args]) >>> 0;

  const statusText = (code: number, type: number): string[] => {
    const lines: string[] = [];
    const context = new Uint32Array(1);
    const out = new BigUint64Array(2);
    const mech = type === GSS_C_MECH_CODE ? KRB5_OID : 0n;
    do {
      if (gss.call("gss_display_status", [new Uint32Array(1), code, type, mech, context, out]) !== 0) break;
      if (out[0]! > 0n) lines.push(new TextDecoder().decode(ffi.read(out[1]!, Number(out[0]!))));
      gss.call("gss_release_buffer", [new Uint32Array(1), out]);
    } while (context[0] !== 0);
    return lines;
  };
  const fail = (what: string, major: number, minorCode: number): GssError => {
    // The mechanism's words when it has some ("No Kerberos credentials available (default cache:
    // FILE:/tmp/krb5cc_1000)"); GSSAPI's generic ones ("No credentials were supplied...") otherwise.
    const mechanism = minorCode ? statusText(minorCode, GSS_C_MECH_CODE) : [];
    const words = mechanism.length > 0 ? mechanism : statusText(major, GSS_C_GSS_CODE);
    const routine = routineError(major);
    return new GssError(
      `${what}: ${words.join(": ") || `major status ${major}`}`,
      routine === GSS_S_NO_CRED || routine === GSS_S_CREDENTIALS_EXPIRED,
    );
  };

  return {
    initiate(service) {
      const keep: unknown[] = [];
      const name = new BigUint64Array(1);
      const krb5Cred = new BigUint64Array(1);
      const cred = new BigUint64Array(1);
      const context = new BigUint64Array(1);
      const output = new BigUint64Array(2);
      try {
        let major = call("gss_import_name", buffer(new TextEncoder().encode(service), keep), HOSTBASED, name);
        if (major !== 0) throw fail(`the service name ${service} is not valid`, major, minor[0]!);
        // Kerberos credentials alone first: without a ticket, this is where the krb5 mechanism
        // says so in its own words (naming the cache it looked in), which SPNEGO would hide
        // behind "no mechanisms to negotiate".
        const lifetime = new Uint32Array(1);
        major = call("gss_acquire_cred", 0n, 0, KRB5_ONLY, GSS_C_INITIATE, krb5Cred, 0n, lifetime);
        if (major !== 0) throw fail("no Kerberos ticket", major, minor[0]!);
        // An expired ticket is still a credential to MIT's acquire_cred (time_rec 0): only the
        // KDC would say "Ticket expired", and as a failure to get the proxy's ticket.
        if (lifetime[0] === 0) throw new GssError("no valid Kerberos ticket: the one in the credential cache has expired", true);
        // SPNEGO, as curl, browsers and Windows send (RFC 4559), limited to Kerberos: the agent
        // does NTLM itself, with the credentials it was given, never a gss-ntlmssp it finds.
        major = call("gss_acquire_cred", 0n, 0, SPNEGO_ONLY, GSS_C_INITIATE, cred, 0n, 0n);
        if (major !== 0) throw fail("no SPNEGO credentials", major, minor[0]!);
        major = limitsMechanisms ? call("gss_set_neg_mechs", cred[0]!, KRB5_ONLY) : 0;
        if (major !== 0) throw fail("cannot limit SPNEGO to Kerberos", major, minor[0]!);
        // No flags: no delegation of the ticket to the proxy, no mutual authentication.
        major = call("gss_init_sec_context", cred[0]!, context, name[0]!, SPNEGO_OID, 0, 0, 0n, 0n, 0n, output, 0n, 0n);
        if (major !== 0 && major !== GSS_S_CONTINUE_NEEDED)
          throw fail(`no Kerberos service ticket for ${service}`, major, minor[0]!);
        return ffi.read(output[1]!, Number(output[0]!));
      } finally {
        keep.length = 0;
        const scratch = new Uint32Array(1);
        if (output[1]) gss.call("gss_release_buffer", [scratch, output]);
        if (context[0]) gss.call("gss_delete_sec_context", [scratch, context, 0n]);
        if (cred[0]) gss.call("gss_release_cred", [scratch, cred]);
        if (krb5Cred[0]) gss.call("gss_release_cred", [scratch, krb5Cred]);
        if (name[0]) gss.call("gss_release_name", [scratch, name]);
      }
    },
    identity() {
      if (krb5 === undefined) {
        try {
          krb5 = ffi.open(krb5Paths(ffi.os), KRB5);
        } catch {
          krb5 = null;
        }
      }
      if (!krb5) return {};
      const lib = krb5;
      const context = new BigUint64Array(1);
      if (lib.call("krb5_init_context", [context]) !== 0) return {};
      const found: { realm?: string; principal?: string } = {};
      try {
        const realm = new BigUint64Array(1);
        if (lib.call("krb5_get_default_realm", [context[0]!, realm]) === 0) {
          found.realm = ffi.readCString(realm[0]!);
          lib.call("krb5_free_default_realm", [context[0]!, realm[0]!]);
        }
        const cache = new BigUint64Array(1);
        if (lib.call("krb5_cc_default", [context[0]!, cache]) === 0) {
          const principal = new BigUint64Array(1);
          if (lib.call("krb5_cc_get_principal", [context[0]!, cache[0]!, principal]) === 0) {
            const text = new BigUint64Array(1);
            if (lib.call("krb5_unparse_name", [context[0]!, principal[0]!, text]) === 0) {
              found.principal = ffi.readCString(text[0]!);
              lib.call("krb5_free_unparsed_name", [context[0]!, text[0]!]);
            }
            lib.call("krb5_free_principal", [context[0]!, principal[0]!]);
          }
          lib.call("krb5_cc_close", [context[0]!, cache[0]!]);
        }
      } finally {
        lib.call("krb5_free_context", [context[0]!]);
      }
      return found;
    },
    close() {
      held.length = 0;
      gss.close();
      krb5?.close();
    },
  };
}
