"""Content-Encoding for the ICAP service: decode what an origin compressed, boundedly, before the scan.

Squid and e2guardian hand the response body over as the origin sent it: a listed image served with
``Content-Encoding: gzip`` arrives as a gzip stream, whose bytes neither look like an image nor hash
like one. The service sniffs and scans the decoded bytes and still answers with the original ones.
One gzip/x-gzip/deflate layer is decoded (zlib only); anything else (br, zstd, compress, several
layers) cannot be scanned and is counted and logged by the server. Decoding never produces more than
``limit`` bytes (a gzip bomb stops there). No I/O.
"""

from __future__ import annotations

import zlib
from typing import List, Optional

DECODABLE = ("gzip", "x-gzip", "deflate")
_IDENTITY = ("identity", "")


class DecodeError(ValueError):
    """The encoded body is corrupt or not what its Content-Encoding says."""


class TooLarge(ValueError):
    """Decoding would produce more than the limit."""


def content_codings(value: Optional[str]) -> List[str]:
    """The codings of a Content-Encoding value in the order they were applied, identity dropped."""
    if not value:
        return []
    return [c.strip(" \t").lower() for c in value.split(",") if c.strip(" \t").lower() not in _IDENTITY]


def decodable(codings: List[str]) -> bool:
    """Whether ``codings`` is none, or one layer that ``decode`` undoes."""
    return not codings or (len(codings) == 1 and codings[0] in DECODABLE)


def _decompressor(coding: str, data: bytes):
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(31)
    # RFC 9110 "deflate" is zlib-wrapped; some servers send a raw deflate stream.
    if len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0:
        return zlib.decompressobj(15)
    return zlib.decompressobj(-15)


def decode(data: bytes, codings: List[str], limit: int, partial: bool = False) -> bytes:
    """``data`` decoded (at most ``limit`` bytes; TooLarge beyond unless ``partial``).

    ``partial``: ``data`` is only the start of the stream (a preview): return what it decodes to, up to
    ``limit`` bytes, without complaining that it ends early.
    """
    if not codings:
        return bytes(data[:limit]) if partial else bytes(data)
    if not decodable(codings):
        raise DecodeError("content coding %s is not decoded" % ",".join(codings)[:40])
    coding = codings[0]
    out = bytearray()
    rest = bytes(data)
    z = _decompressor(coding, rest)
    try:
        while rest:
            piece = z.decompress(rest, limit - len(out) + 1)
            out += piece
            if len(out) > limit:
                if partial:
                    return bytes(out[:limit])
                raise TooLarge("decoded body over %d bytes" % limit)
            if z.unconsumed_tail:
                rest = z.unconsumed_tail
                continue
            if z.eof:
                rest = z.unused_data
                if coding == "deflate" or not rest.strip(b"\0"):
                    break
                z = zlib.decompressobj(31)  # another gzip member
                continue
            break
        if not partial and not z.eof:
            raise DecodeError("encoded body ends early")
    except zlib.error as exc:
        if partial and out:
            return bytes(out[:limit])
        raise DecodeError("corrupt %s body: %s" % (coding, exc))
    return bytes(out)


def encode(data: bytes, codings: List[str]) -> bytes:
    """``data`` encoded with ``codings`` when they are decodable ones (for a placeholder), else as is."""
    if not codings or not decodable(codings):
        return data
    if codings[0] in ("gzip", "x-gzip"):
        z = zlib.compressobj(6, zlib.DEFLATED, 31)
    else:
        z = zlib.compressobj(6, zlib.DEFLATED, 15)
    return z.compress(data) + z.flush()
