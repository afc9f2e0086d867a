"""Content-Encoding for the intakes: what the proxy offers origins, and bounded decoders. No I/O.

A listed image served with ``Content-Encoding: gzip`` must be hashed as the image, not as the gzip
stream: the proxy offers origins only the codings it can decode (``offered_encodings``) and decodes
incrementally (``BoundedDecoder``); the ICAP service, which gets bodies as the origin sent them,
decodes in one go (``decode``). Both relay the original bytes. One gzip/x-gzip/deflate layer is
decoded (zlib only); anything else (br, zstd, compress, several layers) cannot be scanned and is
counted and logged by the intake. Decoding never produces more than ``limit`` bytes (a gzip bomb
stops there) and asks zlib for at most the bytes the caller pulls at a time.
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
    """Whether ``codings`` (from content_codings) is one layer this module decodes, or none."""
    return len(codings) == 0 or (len(codings) == 1 and codings[0] in DECODABLE)


def offered_encodings(value: Optional[str]) -> Optional[str]:
    """The client's Accept-Encoding cut down to what we decode (None: send no Accept-Encoding).

    Keeps compression for text (gzip, deflate) and drops br, zstd, compress and the wildcard,
    which would let an origin send an image we could not hash.
    """
    if value is None:
        return None
    kept = []
    for item in value.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if name in DECODABLE or name == "identity":
            q = params.replace(" ", "").lower()
            if q.startswith("q=0") and q.strip("q=0.") == "":
                continue
            kept.append(name)
    return ", ".join(kept) if kept else "identity"


class BoundedDecoder:
    """Decode one gzip/deflate layer incrementally, at most ``limit`` output bytes in all.

    ``push(encoded)`` queues input; ``pull(n)`` returns at most ``n`` decoded bytes (b"" when it needs
    more input), so a caller can reserve memory before each pull. Past the limit ``over`` is set and
    nothing more is decoded (a gzip bomb costs at most ``limit`` bytes). DecodeError when corrupt.
    """

    def __init__(self, coding: str, limit: int):
        self.coding = coding
        self.limit = limit
        self.out_bytes = 0
        self.over = False
        self._pending = b""
        self._sniff_raw = coding == "deflate"  # RFC "deflate" is zlib-wrapped; some servers send raw deflate
        self._z = zlib.decompressobj(31 if coding in ("gzip", "x-gzip") else 15)

    @property
    def complete(self) -> bool:
        """Whether the encoded stream ended properly."""
        return self._z.eof

    def push(self, data: bytes) -> None:
        if not self.over and data:
            self._pending += data

    def pull(self, n: int) -> bytes:
        if self.over or n <= 0:
            return b""
        if self._sniff_raw:
            if len(self._pending) < 2:
                return b""
            b0, b1 = self._pending[0], self._pending[1]
            if (b0 & 0x0F) != 8 or ((b0 << 8) | b1) % 31:
                self._z = zlib.decompressobj(-15)
            self._sniff_raw = False
        while self._pending:
            if self._z.eof:
                rest = self._pending
                if self.coding == "deflate" or not rest.strip(b"\0"):
                    self._pending = b""  # bytes after the stream (padding) are ignored, as gzip readers do
                    return b""
                self._z = zlib.decompressobj(31)  # another gzip member
                self._pending = rest
            room = min(n, self.limit - self.out_bytes + 1)
            try:
                piece = self._z.decompress(self._pending, room)
            except zlib.error as exc:
                raise DecodeError(str(exc))
            self._pending = self._z.unconsumed_tail
            if self._z.eof and self._z.unused_data:
                self._pending = self._z.unused_data + self._pending
            if piece:
                self.out_bytes += len(piece)
                if self.out_bytes > self.limit:
                    self.over = True
                    self._pending = b""
                    return piece[: len(piece) - (self.out_bytes - self.limit)]
                return piece
            if not self._z.eof:
                break
        return b""

def decode(data: bytes, codings: List[str], limit: int, partial: bool = False) -> bytes:
    """``data`` decoded in one go (at most ``limit`` bytes; TooLarge beyond unless ``partial``).

    ``partial``: ``data`` is only the start of the stream (a preview): return what it decodes to, up to
    ``limit`` bytes, without complaining that it ends early.
    """
    if not codings:
        return bytes(data[:limit]) if partial else bytes(data)
    if not decodable(codings):
        raise DecodeError("content coding %s is not decoded" % ",".join(codings)[:40])
    decoder = BoundedDecoder(codings[0], limit)
    decoder.push(bytes(data))
    out = bytearray()
    try:
        while True:
            piece = decoder.pull(1 << 16)
            if not piece:
                break
            out += piece
    except DecodeError as exc:
        if partial and out:
            return bytes(out)
        raise DecodeError("corrupt %s body: %s" % (codings[0], exc))
    if decoder.over:
        if partial:
            return bytes(out)
        raise TooLarge("decoded body over %d bytes" % limit)
    if not partial and not decoder.complete:
        raise DecodeError("encoded body ends early")
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
