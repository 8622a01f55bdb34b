#!/usr/bin/python3
"""A squid NTLM authenticator that checks NTLMv2 passwords for real, for the corp-network tests.

It computes nothing itself: each token goes to GSSAPI's gss_accept_sec_context with the
gss-ntlmssp mechanism (OID 1.3.6.1.4.1.311.2.2.10), which builds the challenge and verifies the
response against its user file (NTLM_USER_FILE, lines "DOMAIN:user:password"). So a wrong
password is refused by an implementation independent of the agent's. With LM_COMPAT_LEVEL=5,
gss-ntlmssp (as a stand-alone server: NetBIOS domain its default "WORKSTATION") refuses LM,
NTLMv1 and NTLM2-session responses: only NTLMv2 passes.

Squid's stateful NTLM helper protocol (Squid 5, src/helper/Reply.cc, src/auth/ntlm/):
  in:  "YR <base64 type 1>"  a new handshake     out: "TT <base64 type 2>"
  in:  "KK <base64 type 3>"  the response         out: "OK user=<url-encoded DOMAIN\\user>"
                                                       "ERR message=<url-encoded reason>"
  "BH <reason>" says the helper itself is broken (squid answers 407 and logs an error).
Squid keeps a helper to one client connection from YR to the answer to KK, so one context per
process is enough.

Only the Python standard library (ctypes) and MIT krb5's libgssapi_krb5.so.2 are needed.
"""

import base64
import ctypes
import os
import struct
import sys
import urllib.parse
from ctypes import POINTER, Structure, byref, c_size_t, c_uint32, c_void_p

NTLMSSP_OID = bytes([0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0A])
GSS_C_INDEFINITE = 0xFFFFFFFF
GSS_C_ACCEPT = 2
GSS_S_COMPLETE = 0
GSS_S_CONTINUE_NEEDED = 1
GSS_C_GSS_CODE = 1
GSS_C_MECH_CODE = 2
NTLMSSP_NEGOTIATE_UNICODE = 0x00000001
NTLMSSP_REQUEST_TARGET = 0x00000004
NTLMSSP_TARGET_TYPE_DOMAIN = 0x00010000
NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
MSV_AV_EOL, MSV_AV_FLAGS, MSV_AV_FLAG_MIC_PRESENT = 0, 6, 0x2


class Buffer(Structure):
    _fields_ = [("length", c_size_t), ("value", c_void_p)]


class Oid(Structure):
    _fields_ = [("length", c_uint32), ("elements", c_void_p)]


class OidSet(Structure):
    _fields_ = [("count", c_size_t), ("elements", POINTER(Oid))]


gss = ctypes.CDLL("libgssapi_krb5.so.2")
_oid_bytes = ctypes.create_string_buffer(NTLMSSP_OID, len(NTLMSSP_OID))
NTLMSSP = Oid(len(NTLMSSP_OID), ctypes.cast(_oid_bytes, c_void_p))


def is_error(major):
    # GSS_ERROR(): the calling and routine error fields (RFC 2744 3.9.1).
    return (major & 0xFFFF0000) != 0


def describe(major, minor):
    """The messages of gss_display_status for a major and a gss-ntlmssp minor status."""
    messages = []
    for code, kind, mech in ((major, GSS_C_GSS_CODE, None), (minor, GSS_C_MECH_CODE, byref(NTLMSSP))):
        if kind == GSS_C_MECH_CODE and code == 0:
            continue
        context = c_uint32(0)
        while True:
            status, text = c_uint32(0), Buffer()
            gss.gss_display_status(byref(status), c_uint32(code), kind, mech, byref(context), byref(text))
            messages.append(ctypes.string_at(text.value, text.length).decode("utf-8", "replace"))
            gss.gss_release_buffer(byref(status), byref(text))
            if context.value == 0:
                break
    return "; ".join(message for message in messages if message)


def acceptor_credential():
    """A credential for accepting NTLMSSP only: no Kerberos or SPNEGO token is ever taken."""
    minor, cred = c_uint32(0), c_void_p(None)
    mechs = OidSet(1, ctypes.pointer(NTLMSSP))
    major = gss.gss_acquire_cred(
        byref(minor), None, GSS_C_INDEFINITE, byref(mechs), GSS_C_ACCEPT, byref(cred), None, None
    )
    if is_error(major):
        raise RuntimeError("no NTLMSSP acceptor credential (is gss-ntlmssp installed?): " + describe(major, minor.value))
    return cred


# Where the fields of each message type sit (MS-NLMP 2.2.1): the offsets of its payload
# descriptors (length, maximum length, offset) and the size of its header with the Version
# (8 bytes) and, in type 3, the MIC (16 bytes).
NEGOTIATE_FIELDS, NEGOTIATE_HEADER = (16, 24), 40
AUTHENTICATE_FIELDS, AUTHENTICATE_HEADER = (12, 20, 28, 36, 44, 52), 88


def with_full_header(token, fields, header):
    """The message with zeros inserted where its Version and MIC fields would be, if it has none.

    MS-NLMP lets a client leave out the Version field (it is there only with
    NTLMSSP_NEGOTIATE_VERSION) and the MIC; curl leaves out both (a 32-byte type 1, a type 3
    whose payload starts at 64). gss-ntlmssp 1.2 refuses such messages ("Failed to decode data":
    ntlm_decode_msg_type wants the full header, ntlm_decode_field a payload after it) although
    it ignores a Version without the flag and a MIC that no MsvAvFlags announces. This moves
    the payload and its offsets only: the responses and names stay byte for byte, and with them
    what gss-ntlmssp verifies. But a MIC covers the type 1 as sent, so a client that omits the
    Version in type 1 and sends a MIC in type 3 is refused here (and the refusal says why).
    """
    try:
        descriptors = [struct.unpack_from("<HHI", token, offset) for offset in fields]
    except struct.error:
        return token  # too short: gss-ntlmssp says so
    start = min([offset for length, _, offset in descriptors if length] + [len(token)])
    if start >= header:
        return token
    gap = header - start
    moved = bytearray(token[:start] + bytes(gap) + token[start:])
    for at, (length, maximum, offset) in zip(fields, descriptors):
        if length:
            struct.pack_into("<HHI", moved, at, length, maximum, offset + gap)
    return bytes(moved)


def response_summary(token):
    """'NTLMv2 response from DOMAIN\\user' from a type 3 message, for the log only (MS-NLMP 2.2.1.3)."""
    try:
        nt_length = struct.unpack_from("<H", token, 20)[0]
        flags = struct.unpack_from("<I", token, 60)[0]
        unicode = flags & NTLMSSP_NEGOTIATE_UNICODE
        names = []
        for offset in (28, 36):  # DomainNameFields, UserNameFields
            length, _, start = struct.unpack_from("<HHI", token, offset)
            names.append(token[start : start + length].decode("utf-16-le" if unicode else "latin-1", "replace"))
        # A 24-byte NT response is NTLMv1, or NTLM2-session when extended session security was
        # negotiated (MS-NLMP 3.3.1); NTLMv2's carries a blob after its 16-byte proof.
        v1 = "NTLM2-session" if flags & NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY else "NTLMv1"
        kind = "NTLMv2" if nt_length > 24 else v1 if nt_length == 24 else "LM"
        return "%s response from %s\\%s" % (kind, names[0], names[1])
    except struct.error:
        return "malformed type 3 message"


def announces_mic(token):
    """Whether a type 3 message's NTLMv2 response has MsvAvFlags with "MIC present" (MS-NLMP 2.2.2.1)."""
    try:
        length, _, offset = struct.unpack_from("<HHI", token, 20)
        # NTProofStr (16), then the blob: version (2), reserved (6), time (8), client challenge
        # (8), reserved (4), then the AV pairs (MS-NLMP 2.2.2.7).
        at, end = offset + 44, offset + length
        while at + 4 <= end:
            av_id, av_length = struct.unpack_from("<HH", token, at)
            if av_id == MSV_AV_EOL:
                return False
            if av_id == MSV_AV_FLAGS and av_length == 4:
                return bool(struct.unpack_from("<I", token, at + 4)[0] & MSV_AV_FLAG_MIC_PRESENT)
            at += 4 + av_length
    except struct.error:
        pass
    return False


class Handshake:
    def __init__(self):
        self.credential = acceptor_credential()
        self.context = c_void_p(None)
        self.padded_negotiate = False

    def reset(self):
        if self.context.value:
            minor = c_uint32(0)
            gss.gss_delete_sec_context(byref(minor), byref(self.context), None)
        self.context = c_void_p(None)

    def step(self, token):
        """Feeds a token to gss_accept_sec_context: (major, minor, output token, peer name)."""
        minor, output, name = c_uint32(0), Buffer(), c_void_p(None)
        data = ctypes.create_string_buffer(token, len(token))
        given = Buffer(len(token), ctypes.cast(data, c_void_p))
        major = gss.gss_accept_sec_context(
            byref(minor), byref(self.context), self.credential, byref(given), None,
            byref(name), None, byref(output), None, None, None,
        )  # fmt: skip
        reply = ctypes.string_at(output.value, output.length) if output.length else b""
        status = c_uint32(0)
        gss.gss_release_buffer(byref(status), byref(output))
        peer = None
        if major == GSS_S_COMPLETE and name.value:
            text = Buffer()
            gss.gss_display_name(byref(status), name, byref(text), None)
            # gss-ntlmssp counts the terminating NUL in the length.
            peer = ctypes.string_at(text.value, text.length).rstrip(b"\0").decode("utf-8", "replace")
            gss.gss_release_buffer(byref(status), byref(text))
            gss.gss_release_name(byref(status), byref(name))
        if is_error(major):
            self.context = c_void_p(None)  # gss-ntlmssp frees a context that failed
        return major, minor.value, reply, peer


VERDICTS = os.environ.get("BURROW_NTLM_VERDICTS")


# Set when negotiate_wrapper_auth runs this helper for NTLMSSP tokens inside Negotiate.
INSIDE_NEGOTIATE = os.environ.get("BURROW_NTLM_INSIDE_NEGOTIATE") == "1"


def log(message):
    line = "burrow ntlm verifier: " + message
    print(line, file=sys.stderr, flush=True)
    # Also in a file of its own, written before squid has the answer: squid copies a helper's
    # stderr into cache.log when it gets to it, so a test that reads cache.log as soon as its
    # client has its answer could miss the last verdicts.
    if VERDICTS:
        with open(VERDICTS, "a", encoding="utf-8") as verdicts:
            verdicts.write(line + "\n")


def answer(handshake, line):
    words = line.split()
    if not words:
        return "BH empty request"
    request, blob = words[0], words[1] if len(words) > 1 else ""
    try:
        token = base64.b64decode(blob, validate=True)
    except ValueError:
        return "BH the token is not base64"
    if request == "YR":
        handshake.reset()
        negotiate = with_full_header(token, NEGOTIATE_FIELDS, NEGOTIATE_HEADER)
        handshake.padded_negotiate = negotiate != token
        if len(token) >= 16 and not struct.unpack_from("<I", token, 12)[0] & NTLMSSP_REQUEST_TARGET:
            # MS-NLMP 3.2.5.1.1 has the server send TargetInfo for NTLMv2 anyway, and Windows does;
            # gss-ntlmssp sends it only when asked, and without it a client sends no MIC.
            log("the type 1 message does not set NTLMSSP_REQUEST_TARGET: the challenge has no target info")
        major, minor, reply, _ = handshake.step(negotiate)
        if major == GSS_S_CONTINUE_NEEDED and reply:
            # Target type "domain" would make gss-ntlmssp defer the LM/NTLMv1 decision to a
            # domain controller (gssntlm_sec_ntlm_ok), that is, accept NTLMv1: never run so.
            flags = struct.unpack_from("<I", reply, 20)[0] if len(reply) >= 24 else 0
            if flags & NTLMSSP_TARGET_TYPE_DOMAIN:
                handshake.reset()
                return "BH gss-ntlmssp acts as a domain member here (NETBIOS_DOMAIN_NAME or winbind): it would accept NTLMv1"
            return "TT " + base64.b64encode(reply).decode()
        reason = describe(major, minor)
        log("refused a type 1 message: " + reason)
        return "ERR message=" + urllib.parse.quote(reason, safe="")
    if request == "KK":
        if not handshake.context.value:
            return "BH a type 3 message without a handshake in progress"
        summary = response_summary(token)
        mic = announces_mic(token)
        if mic:
            summary += " (with a MIC)"
        major, minor, _, peer = handshake.step(with_full_header(token, AUTHENTICATE_FIELDS, AUTHENTICATE_HEADER))
        handshake.reset()
        if major == GSS_S_COMPLETE and peer:
            log("accepted " + summary)
            if INSIDE_NEGOTIATE:
                # Squid 5 takes a Negotiate success only with a token ("Unsupported helper
                # response" is fatal to it), and NTLM has none: negotiate_wrapper_auth turns the
                # old-style "AF user" into "AF = user", a placeholder token, as for ntlm_fake_auth.
                return "AF " + peer if " " not in peer else "BH the user name holds a space (old-style AF reply)"
            return "OK user=" + urllib.parse.quote(peer, safe="")
        reason = describe(major, minor)
        if mic and handshake.padded_negotiate:
            reason += (
                " (the MIC covers a type 1 message sent without its Version field, which gss-ntlmssp"
                " 1.2 only reads padded: send the Version field, as Windows does, to have a MIC checked)"
            )
        log("refused %s: %s" % (summary, reason))
        return "ERR message=" + urllib.parse.quote(reason, safe="")
    return "BH unknown request " + request[:16]


def check():
    """--check: exits 0 when gss-ntlmssp answers a type 1 message with a challenge."""
    # NTLMSSP_NEGOTIATE_UNICODE | NTLM | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY, no Version flag.
    negotiate = b"NTLMSSP\0" + struct.pack("<II", 1, 0x00088201) + bytes(24)
    try:
        reply = answer(Handshake(), "YR " + base64.b64encode(negotiate).decode())
    except RuntimeError as error:
        sys.exit(str(error))
    if not reply.startswith("TT "):
        sys.exit("gss-ntlmssp gave no challenge: " + urllib.parse.unquote(reply))


def main():
    # A NetBIOS domain other than the default makes gss-ntlmssp a domain member (see answer()).
    os.environ.pop("NETBIOS_DOMAIN_NAME", None)
    if sys.argv[1:] == ["--check"]:
        return check()
    if not os.environ.get("NTLM_USER_FILE"):
        log("NTLM_USER_FILE is not set")
    try:
        handshake = Handshake()
    except RuntimeError as error:
        handshake = str(error)
        log(handshake)
    for line in sys.stdin:
        # Exiting would have squid restart the helper over and over: say why instead.
        reply = "BH " + handshake if isinstance(handshake, str) else answer(handshake, line)
        sys.stdout.write(reply + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
