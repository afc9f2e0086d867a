"""Content-Encoding for the proxy: what it offers origins, and a bounded decoder. No I/O.

A listed image served with ``Content-Encoding: gzip`` must be hashed as the image, not as the gzip
stream. The proxy offers origins only the codings it can decode (``offered_encodings``), relays the
encoded bytes to the client unchanged, and hashes the decoded bytes. Decoding is bounded: a decoder
never produces more than ``limit`` bytes (a gzip bomb stops at the limit, ``over`` is set; the input
left is not decoded at all) and asks zlib for at most ``step`` bytes at a time.
"""

from __future__ import annotations

import zlib
from typing import List, Optional

DECODABLE = ("gzip", "x-gzip", "deflate")
_IDENTITY = ("identity", "")


class DecodeError(ValueError):
    """The encoded body is corrupt."""


def content_codings(value: Optional[str]) -> List[str]:
    """The codings of a Content-Encoding value in the order they were applied, identity dropped."""
    if not value:
        return []
    return [c.strip().lower() for c in value.split(",") if c.strip().lower() not in _IDENTITY]


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
