"""ClientHellos for tests: real ones from Python's ssl (OpenSSL), and hand-built ones with chosen fields."""

from __future__ import annotations

import os
import random
import ssl
import struct


def real_hello(server_name=None, alpn=("h2", "http/1.1")) -> bytes:
    """The first flight OpenSSL sends for ``server_name`` (TLS 1.2-1.3 offer)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def sni_ext(*names: bytes, kind: int = 0) -> bytes:
    entries = b"".join(struct.pack("!BH", kind, len(n)) + n for n in names)
    return ext(0, struct.pack("!H", len(entries)) + entries)


def built_hello(extensions: bytes = b"", *, version=0x0303, session=b"", suites=b"\x13\x01",
                compression=b"\x00", record_split=None, with_ext_block=True) -> bytes:
    """A ClientHello with chosen parts, in one record or split into records of ``record_split`` bytes."""
    body = struct.pack("!H", version) + os.urandom(32) + bytes([len(session)]) + session
    body += struct.pack("!H", len(suites)) + suites + bytes([len(compression)]) + compression
    if with_ext_block:
        body += struct.pack("!H", len(extensions)) + extensions
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    size = record_split or len(hs)
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(hs[i:i + size])) + hs[i:i + size]
                    for i in range(0, len(hs), size))


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:
            i = rng.randrange(len(b))
            b[i:i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x40\x00", b"\x00\x01"))
        elif kind == 2 and b:
            del b[rng.randrange(len(b)):]
        elif kind == 3:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 4 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 16)]
        else:
            b[rng.randrange(len(b) + 1):0] = b[:rng.randint(0, 64)]
    return bytes(b)
