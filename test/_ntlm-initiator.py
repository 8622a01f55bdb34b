#!/usr/bin/python3
"""An NTLM proxy client made of gss-ntlmssp's initiator, to show that the rig (test/_ntlm-verifier.py)
refuses responses weaker than NTLMv2 even with the right password. curl answers a challenge that
has target info with NTLMv2 only, so it cannot show that.

gss-ntlmssp's LM_COMPAT_LEVEL (gssntlm_required_security) picks what this client sends:
0 LM and NTLMv1, 1 and 2 NTLM2-session (NTLMv1 with extended session security), 3 to 5 NTLMv2.

With "mic", it asks for integrity (so signing is negotiated) and tells gss-ntlmssp that a MIC
may be added (the SPNEGO-requires-MIC context query, MS-SPNG 3.1.5.1): its type 3 message then
has a MIC, as Windows clients send when the challenge has a timestamp (MS-NLMP 3.1.5.1.2). With
"bad-mic", it flips a bit of that MIC before sending it.

usage: _ntlm-initiator.py PROXY_HOST PROXY_PORT TARGET_HOST:PORT 'DOMAIN\\user' PASSWORD [mic|bad-mic]
prints: "sent <kind> response from DOMAIN\\user", then the proxy's last status line.
"""

import base64
import ctypes
import importlib.util
import os
import socket
import sys
from ctypes import byref, c_uint32, c_void_p

_spec = importlib.util.spec_from_file_location("verifier", os.path.join(os.path.dirname(__file__), "_ntlm-verifier.py"))
verifier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verifier)
gss, Buffer, NTLMSSP = verifier.gss, verifier.Buffer, verifier.NTLMSSP
GSS_C_INITIATE = 1
GSS_C_INTEG_FLAG = 32
# gss-ntlmssp's GSS_SPNEGO_REQUIRE_MIC_OID (gssapi_ntlmssp.h): its base OID, then 2.
_require_mic = b"\x2b\x06\x01\x04\x01\xb7\x7d\x85\x0f\x01\x02"
_require_mic_bytes = ctypes.create_string_buffer(_require_mic, len(_require_mic))
REQUIRE_MIC = verifier.Oid(len(_require_mic), ctypes.cast(_require_mic_bytes, c_void_p))
MIC_OFFSET = 72  # after the 64-byte header and the Version (MS-NLMP 2.2.1.3)


def buffer_of(data):
    keep = ctypes.create_string_buffer(data, len(data))
    return Buffer(len(data), ctypes.cast(keep, c_void_p)), keep


def checked(what, major, minor):
    if verifier.is_error(major):
        sys.exit("%s: %s" % (what, verifier.describe(major, minor.value)))
    return major


def imported_name(text, kind):
    minor, name = c_uint32(0), c_void_p(None)
    given, _keep = buffer_of(text.encode())
    oid = c_void_p.in_dll(gss, kind)
    checked("gss_import_name " + text, gss.gss_import_name(byref(minor), byref(given), oid, byref(name)), minor)
    return name


class Initiator:
    def __init__(self, user, password, proxy_host, mic):
        minor, self.cred, self.context = c_uint32(0), c_void_p(None), c_void_p(None)
        self.mic = mic
        secret, _keep = buffer_of(password.encode())
        mechs = verifier.OidSet(1, ctypes.pointer(NTLMSSP))
        major = gss.gss_acquire_cred_with_password(
            byref(minor), imported_name(user, "GSS_C_NT_USER_NAME"), byref(secret), verifier.GSS_C_INDEFINITE,
            byref(mechs), GSS_C_INITIATE, byref(self.cred), None, None,
        )  # fmt: skip
        checked("gss_acquire_cred_with_password", major, minor)
        self.target = imported_name("HTTP@" + proxy_host, "GSS_C_NT_HOSTBASED_SERVICE")

    def step(self, token):
        minor, output = c_uint32(0), Buffer()
        given, _keep = buffer_of(token) if token is not None else (None, None)
        if token is not None and self.mic:
            answer = c_void_p(None)  # a gss_buffer_set_t, freed with the process
            major = gss.gss_inquire_sec_context_by_oid(byref(minor), self.context, byref(REQUIRE_MIC), byref(answer))
            checked("asking for a MIC", major, minor)
        flags = GSS_C_INTEG_FLAG if self.mic else 0
        major = gss.gss_init_sec_context(
            byref(minor), self.cred, byref(self.context), self.target, byref(NTLMSSP), flags, 0, None,
            byref(given) if given is not None else None, None, byref(output), None, None,
        )  # fmt: skip
        checked("gss_init_sec_context", major, minor)
        reply = ctypes.string_at(output.value, output.length)
        gss.gss_release_buffer(byref(minor), byref(output))
        return reply


def exchange(stream, target, token):
    """Sends a CONNECT with `token`; returns the status line and the NTLM challenge, if any."""
    request = "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: NTLM %s\r\nProxy-Connection: keep-alive\r\n\r\n"
    stream.write((request % (target, target, base64.b64encode(token).decode())).encode())
    stream.flush()
    status = stream.readline().decode().strip()
    challenge, length = None, 0
    for line in iter(stream.readline, b"\r\n"):
        name, _, value = line.decode().partition(":")
        if name.lower() == "proxy-authenticate" and value.strip().startswith("NTLM "):
            challenge = base64.b64decode(value.strip()[5:])
        if name.lower() == "content-length":
            length = int(value)
    stream.read(length)  # the 407 page: the handshake goes on on this connection
    return status, challenge


def main():
    host, port, target, user, password = sys.argv[1:6]
    mic = sys.argv[6] if len(sys.argv) > 6 else ""
    initiator = Initiator(user, password, host, mic in ("mic", "bad-mic"))
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        stream = connection.makefile("rwb")
        status, challenge = exchange(stream, target, initiator.step(None))
        if challenge is None:
            sys.exit("no NTLM challenge: " + status)
        response = initiator.step(challenge)
        if mic == "bad-mic":
            full = verifier.with_full_header(response, verifier.AUTHENTICATE_FIELDS, verifier.AUTHENTICATE_HEADER)
            if full != response or not verifier.announces_mic(response):
                sys.exit("gss-ntlmssp sent no MIC to spoil")
            response = response[:MIC_OFFSET] + bytes([response[MIC_OFFSET] ^ 1]) + response[MIC_OFFSET + 1 :]
        print("sent " + verifier.response_summary(response), flush=True)
        status, _ = exchange(stream, target, response)
        print(status, flush=True)


if __name__ == "__main__":
    main()
