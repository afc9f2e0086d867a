"""The TLS ClientHello, read from untrusted bytes with no I/O: the server name a client asks for.

Owns: a bounded parser of the first flight of a TLS connection (RFC 8446 4.1.2, RFC 5246 7.4.1.2):
handshake records (the ClientHello may span several), the ClientHello's fixed fields, its extensions
(each type at most once), the server_name extension (RFC 6066 3: one host_name) and whether the client
offers Encrypted Client Hello (draft-ietf-tls-esni, extension 0xfe0d: then the name here is only the
outer, public one). Must not touch: sockets, the event loop, lists or policy.

Why our own: OpenWrt packages no Python library that parses a ClientHello without a TLS stack, and
this is all the splice needs. Everything is bounded (``MAX_HELLO``), every length is checked against
what is left, and anything else is ``Malformed`` or ``NotTls``, never an exception of another kind.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional

MAX_HELLO = 32 * 1024  # a ClientHello with post-quantum key shares is ~2 KB; browsers stay far below this
MAX_RECORD = 16384 + 256  # a plaintext record's payload, with a little room
EXT_SERVER_NAME = 0
EXT_ECH = 0xFE0D
ALERT_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"  # fatal alert 49 (access_denied), TLS 1.2 framing


class Hello(NamedTuple):
    """What the ClientHello says: the server name (bytes, or None without one) and ECH on offer."""

    server_name: Optional[bytes]
    ech: bool
    length: int  # bytes of the stream it took (records included)


class NotTls(ValueError):
    """The first bytes are not a TLS handshake record."""


class Malformed(ValueError):
    """A TLS handshake that breaks the ClientHello's rules or our bounds."""


def _handshake_bytes(data: bytes):
    """(handshake bytes joined from the leading handshake records, stream bytes they used); None: need more."""
    out = bytearray()
    i = 0
    need = None
    while True:
        if len(data) - i < 5:
            return None
        ctype, major, minor, length = data[i], data[i + 1], data[i + 2], struct.unpack_from("!H", data, i + 3)[0]
        if i == 0 and (ctype != 22 or major != 3 or minor > 4):
            raise NotTls("not a TLS handshake record")
        if ctype != 22:
            raise Malformed("the ClientHello is interrupted by a record of type %d" % ctype)
        if major != 3 or minor > 4:
            raise Malformed("record version %d.%d" % (major, minor))
        if length == 0 or length > MAX_RECORD:
            raise Malformed("record length %d" % length)
        if len(data) - i - 5 < length:
            return None
        out += data[i + 5:i + 5 + length]
        i += 5 + length
        if need is None and len(out) >= 4:
            if out[0] != 1:
                raise Malformed("first handshake message is type %d, not ClientHello" % out[0])
            need = 4 + (out[1] << 16 | out[2] << 8 | out[3])
            if need > MAX_HELLO:
                raise Malformed("ClientHello of %d bytes is over the %d-byte bound" % (need, MAX_HELLO))
        if need is not None and len(out) >= need:
            return bytes(out[:need]), i
        if i > MAX_HELLO + 5 * 8:
            raise Malformed("handshake records over the bound")


class _Reader:
    def __init__(self, data: bytes, start: int, end: int):
        self.data, self.i, self.end = data, start, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.i + n > self.end:
            raise Malformed("%s runs past its container" % what)
        out = self.data[self.i:self.i + n]
        self.i += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("!H", self.take(2, what))[0]

    def vector(self, size_bytes: int, what: str) -> bytes:
        n = self.u8(what) if size_bytes == 1 else self.u16(what)
        return self.take(n, what)


def parse_hello(data: bytes) -> Optional[Hello]:
    """The ClientHello at the start of ``data``; None when more bytes are needed.

    Raises NotTls when the stream does not start with a TLS handshake record, Malformed for a
    handshake that breaks the rules or the bounds.
    """
    got = _handshake_bytes(bytes(data[:MAX_HELLO + 4096]))
    if got is None:
        if len(data) > MAX_HELLO + 4096:
            raise Malformed("no complete ClientHello within %d bytes" % MAX_HELLO)
        return None
    hs, used = got
    r = _Reader(hs, 4, len(hs))
    version = r.u16("legacy_version")
    if version >> 8 != 3:
        raise Malformed("ClientHello version %#x" % version)
    r.take(32, "random")
    if len(r.vector(1, "session_id")) > 32:
        raise Malformed("session_id over 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise Malformed("cipher_suites length %d" % len(suites))
    if not r.vector(1, "compression_methods"):
        raise Malformed("no compression method")
    if r.i == r.end:
        return Hello(None, False, used)  # no extensions at all (TLS 1.0-era clients): no name
    ext = _Reader(hs, r.i + 2, r.i + 2 + r.u16("extensions"))
    if ext.end != r.end:
        raise Malformed("extensions do not end with the ClientHello")
    seen = set()
    name = None
    while ext.i < ext.end:
        etype = ext.u16("extension type")
        body = ext.vector(2, "extension")
        if etype in seen:
            raise Malformed("extension %d twice" % etype)
        seen.add(etype)
        if etype == EXT_SERVER_NAME:
            name = _server_name(body)
    return Hello(name, EXT_ECH in seen, used)


def _server_name(body: bytes) -> Optional[bytes]:
    r = _Reader(body, 0, len(body))
    lst = _Reader(body, 2, 2 + r.u16("server_name_list"))
    if lst.end != len(body):
        raise Malformed("server_name list length")
    name = None
    while lst.i < lst.end:
        kind = lst.u8("name_type")
        value = lst.vector(2, "server name")
        if kind != 0:
            continue  # unknown name types are skipped (RFC 6066 leaves room for them)
        if name is not None:
            raise Malformed("more than one host_name")
        if not value or len(value) > 255 or any(c < 0x21 or c > 0x7E for c in value):
            raise Malformed("host_name is not a printable ASCII name of 1-255 bytes")
        name = value
    return name
