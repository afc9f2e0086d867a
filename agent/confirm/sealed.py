"""Sealed entries: what the hub keeps so that a device learns an entry only from a near-duplicate.

Owns: the OPRF input of a probe (list, signal, band, full band value or digest), what an OPRF output
opens (its bucket, its record tag, its record key), sealing and opening records, the bucket layout and
the Merkle commitment to all buckets that the signed manifest carries. The hub's builder and the
device use these functions and nothing else, so both always agree. Must not touch: the group and the
OPRF (``agent.confirm.oprf``), messages and topics (``agent.confirm.client``, the hub's service).

How it fits together (docs/privacy.md):

- Every entry of a list is found under one probe per band (perceptual: band j holding value v) or
  under its digest (exact). The hub computes y = OPRF(k, input(probe)) for each and stores a record
  ``tag(y) || AEAD_key(y)(entry hash, entry id)`` in bucket ``bucket(y)``. A device can compute y for
  a probe only with a hub round trip on a blinded value, and only a probe that equals an entry's
  band (or digest) opens that entry's record: chosen keys without the image open nothing.
- Records are version-independent (the input names the list, not its version), so a new version
  re-seals only what changed; the bucket commitment is per version.
- The manifest's ``sealed`` section (signed, in the transparency log) holds the number of buckets and
  the Merkle root over them: a device accepts a bucket only with a proof against that root, so a hub
  or broker can neither forge an entry nor hide one that is there (``verify_bucket``).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.core.errors import ConfirmError

SCHEME = "gw-sealed-1"
from agent.core.lsh import EXACT_BAND  # noqa: F401  (the "band" of an exact digest)
TAG_BYTES = 16
MAX_ID_BYTES = 200
MAX_HASH_BYTES = 64
MIN_BUCKETS = 16
MAX_BUCKETS = 1 << 22
TARGET_PER_BUCKET = 64  # records per bucket the builder aims at: the k of the bucket's anonymity
MAX_BUCKET_BYTES = 256 * 1024  # a bucket larger than this is refused on both sides
_NONCE = bytes(12)  # every record key seals exactly one plaintext (derived from its own OPRF output)
_PREFIX = b"gatewatch-confirm-v1\x00"


def oprf_input(source: str, name: str, signal: str, band: int, value: bytes) -> bytes:
    """The OPRF input of one probe: domain, list, signal, band and the full band value or digest."""
    if not 0 <= band <= 0xFFFF:
        raise ValueError("band out of range")
    return (_PREFIX + source.encode() + b"\x00" + name.encode() + b"\x00" + signal.encode() + b"\x00"
            + struct.pack(">H", band) + bytes(value))


def band_value_bytes(value: int) -> bytes:
    """A perceptual band value as the OPRF input carries it (8 bytes, big-endian)."""
    return int(value).to_bytes(8, "big")


class Opening:
    """What one OPRF output opens: a bucket index (mod the list's bucket count), a tag, a key."""

    __slots__ = ("bucket_word", "tag", "key")

    def __init__(self, output: bytes):
        if len(output) != 64:
            raise ConfirmError("an OPRF output is 64 bytes")
        d = hashlib.sha512(b"gatewatch-sealed-open\x00" + output).digest()
        self.bucket_word = int.from_bytes(d[:4], "big")
        self.tag = d[4:4 + TAG_BYTES]
        self.key = d[32:64]

    def bucket(self, buckets: int) -> int:
        """The bucket of this output in a list of ``buckets`` buckets (a power of two)."""
        return self.bucket_word & (buckets - 1)


def _plaintext(entry_hash: bytes, ident: str) -> bytes:
    raw = ident.encode("utf-8")
    if len(raw) > MAX_ID_BYTES or len(entry_hash) > MAX_HASH_BYTES:
        raise ValueError("entry id or hash too long to seal")
    return bytes([len(entry_hash)]) + entry_hash + struct.pack(">H", len(raw)) + raw


def seal(output: bytes, entry_hash: bytes, ident: str) -> bytes:
    """One record: tag || length || ChaCha20-Poly1305 of the entry under the output's key."""
    o = Opening(output)
    ct = ChaCha20Poly1305(o.key).encrypt(_NONCE, _plaintext(entry_hash, ident), o.tag)
    return o.tag + struct.pack(">H", len(ct)) + ct


def split_records(bucket: bytes) -> List[Tuple[bytes, bytes]]:
    """(tag, ciphertext) of every record of a bucket; ConfirmError when the bytes are malformed."""
    if len(bucket) > MAX_BUCKET_BYTES:
        raise ConfirmError("bucket of %d bytes is over the %d-byte limit" % (len(bucket), MAX_BUCKET_BYTES))
    out, off = [], 0
    while off < len(bucket):
        if off + TAG_BYTES + 2 > len(bucket):
            raise ConfirmError("bucket ends inside a record head")
        tag = bucket[off:off + TAG_BYTES]
        (n,) = struct.unpack_from(">H", bucket, off + TAG_BYTES)
        off += TAG_BYTES + 2
        if n < 16 or off + n > len(bucket):
            raise ConfirmError("bucket record length out of range")
        out.append((tag, bucket[off:off + n]))
        off += n
    return out


def open_bucket(output: bytes, bucket: bytes) -> List[Tuple[bytes, str]]:
    """The entries (hash, id) this OPRF output opens in a bucket (normally none or one)."""
    o = Opening(output)
    aead = ChaCha20Poly1305(o.key)
    found = []
    for tag, ct in split_records(bucket):
        if tag != o.tag:
            continue
        try:
            pt = aead.decrypt(_NONCE, ct, tag)
        except Exception:  # cryptography's InvalidTag: a record under another key with our tag
            continue
        n = pt[0] if pt else 0
        if len(pt) < 1 + n + 2:
            continue
        h = pt[1:1 + n]
        (m,) = struct.unpack_from(">H", pt, 1 + n)
        ident = pt[3 + n:3 + n + m]
        if len(ident) != m:
            continue
        try:
            found.append((h, ident.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return found


def bucket_count(records: int) -> int:
    """The number of buckets for a table of ``records`` records (power of two, ~64 a bucket)."""
    n = MIN_BUCKETS
    while n * TARGET_PER_BUCKET < records and n < MAX_BUCKETS:
        n *= 2
    return n


def build_buckets(records: Iterable[Tuple[bytes, bytes]], buckets: int) -> List[bytes]:
    """Bucket bytes from (OPRF output, record) pairs; records sorted by tag inside a bucket."""
    table: List[List[bytes]] = [[] for _ in range(buckets)]
    for output, record in records:
        table[Opening(output).bucket(buckets)].append(record)
    return [b"".join(sorted(b)) for b in table]


# ---------------------------------------------------------------- the commitment to the buckets

def leaf_hash(bucket: bytes) -> bytes:
    """RFC 9162 leaf hash of one bucket."""
    return hashlib.sha256(b"\x00" + bucket).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class BucketTree:
    """The Merkle tree over a version's buckets (a power of two of them): root and proofs."""

    def __init__(self, buckets: Sequence[bytes]):
        n = len(buckets)
        if n < 1 or n & (n - 1):
            raise ValueError("the bucket count must be a power of two")
        self.levels = [[leaf_hash(b) for b in buckets]]
        while len(self.levels[-1]) > 1:
            prev = self.levels[-1]
            self.levels.append([_node(prev[i], prev[i + 1]) for i in range(0, len(prev), 2)])

    @property
    def root(self) -> bytes:
        """The root the manifest signs."""
        return self.levels[-1][0]

    def proof(self, index: int) -> List[bytes]:
        """Sibling hashes from the leaf up."""
        out = []
        for level in self.levels[:-1]:
            out.append(level[index ^ 1])
            index >>= 1
        return out


def verify_bucket(index: int, bucket: bytes, proof: Sequence[bytes], root: bytes, buckets: int) -> bool:
    """True when ``bucket`` is bucket ``index`` of the version whose manifest signs ``root``."""
    depth = buckets.bit_length() - 1
    if not 0 <= index < buckets or len(proof) != depth or any(len(p) != 32 for p in proof):
        return False
    h = leaf_hash(bucket)
    for sibling in proof:
        h = _node(h, sibling) if index & 1 == 0 else _node(sibling, h)
        index >>= 1
    return h == root


# ---------------------------------------------------------------- the hub's file of one version

class SealedTable:
    """All buckets of one list version as the hub stores them (``hub/<file>.sealed``)."""

    MAGIC = b"GWS1"

    def __init__(self, ident: str, version: int, key_id: str, buckets: List[bytes]):
        self.ident = ident
        self.version = version
        self.key_id = key_id
        self.buckets = buckets
        self._tree: Optional[BucketTree] = None

    @property
    def tree(self) -> BucketTree:
        if self._tree is None:
            self._tree = BucketTree(self.buckets)
        return self._tree

    def commitment(self) -> Dict[str, object]:
        """The manifest's ``sealed`` section for this table."""
        return {"scheme": SCHEME, "buckets": len(self.buckets), "root": self.tree.root.hex(), "key": self.key_id}

    def to_bytes(self) -> bytes:
        head = ("%s\n%d\n%s\n%d\n" % (self.ident, self.version, self.key_id, len(self.buckets))).encode()
        parts = [self.MAGIC, struct.pack(">I", len(head)), head]
        parts.extend(struct.pack(">I", len(b)) + b for b in self.buckets)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> "SealedTable":
        try:
            if data[:4] != cls.MAGIC:
                raise ValueError("not a sealed table")
            (h,) = struct.unpack_from(">I", data, 4)
            ident, version, key_id, n = data[8:8 + h].decode().split("\n")[:4]
            off, buckets = 8 + h, []
            for _ in range(int(n)):
                (m,) = struct.unpack_from(">I", data, off)
                buckets.append(bytes(data[off + 4:off + 4 + m]))
                off += 4 + m
            if off != len(data):
                raise ValueError("trailing bytes")
            return cls(ident, int(version), key_id, buckets)
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise ConfirmError("malformed sealed table: %s" % exc)
