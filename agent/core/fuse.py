"""A binary fuse filter over 16-byte keys: 3-wise, 16-bit fingerprints (MicroPython-safe lookups).

Owns: the portable layout of a ``"fuse16"`` list filter (docs/list-format.md, "Binary fuse filter")
and its lookup. Building one is the hub's (``agent.matching.fuse_batch``, numpy); a device only reads.
Must not touch: files, manifests, numpy.

Why: a Bloom filter spends 1.44x the entropy bound per key; a binary fuse filter (Graf & Lemire,
"Binary Fuse Filters: Fast and Smaller Than Xor Filters", 2022) about 1.125x, so at the same bytes a
PDQ band key gets 16 bits of fingerprint instead of ~18 Bloom bits, and a false positive per probe
is 2^-16 against ~1.6e-4 (docs/benchmarks.md, "Candidate rules and filters"). The price: the filter is
static, so every list change is a full rebuild at the hub (a delta of a fuse list is as large as the
list).

Layout. A key (16 bytes, the same keys a Bloom filter of the list would hold) is hashed with the
filter's 16-byte salt exactly like the first Bloom hash (``agent.core.bloom.Bloom.hashes``, h1):
``h = fmix64(k0 ^ s0 ^ fmix64(k1 ^ s1))``. With segment length L (a power of two) and
``segment_count_length = segment_count * L``::

    f  = (h ^ (h >> 32)) & 0xFFFF                 the key's fingerprint
    h0 = (h * segment_count_length) >> 64         a slot in the first segment_count segments
    h1 = (h0 + L) ^ ((h >> 18) & (L - 1))         in the next segment
    h2 = (h0 + 2L) ^ (h & (L - 1))                in the one after

and the key is present when ``F[h0] ^ F[h1] ^ F[h2] == f``, F being the content read as
``array_length = (segment_count + 2) * L`` little-endian u16. A key that is not in the set passes with
probability 2^-16 whatever F holds: no content, however crafted, makes the filter match most keys
(unlike a Bloom filter full of ones), so a fuse list needs no fill check.
"""

try:
    from agent.core.bloom import KEY_BYTES, MASK64, SALT_BYTES, fmix64, u64_pair
    from agent.core.errors import ListFormatError
except ImportError:  # MicroPython
    from core.bloom import KEY_BYTES, MASK64, SALT_BYTES, fmix64, u64_pair
    from core.errors import ListFormatError

TYPE = "fuse16"
FINGERPRINT_BITS = 16
MAX_SEGMENT_LENGTH = 1 << 18
MAX_ARRAY_LENGTH = 1 << 28  # 512 MiB of fingerprints: the list file's own content cap


def key_hash(key, s0, s1):
    """The 64-bit hash every slot and the fingerprint of ``key`` come from (Bloom's h1)."""
    if len(key) != KEY_BYTES:
        raise ValueError("filter keys are %d bytes, got %d" % (KEY_BYTES, len(key)))
    k0, k1 = u64_pair(key)
    return fmix64(k0 ^ s0 ^ fmix64(k1 ^ s1))


def slots(h, segment_length, segment_count_length):
    """The three slots of hash ``h``."""
    mask = segment_length - 1
    h0 = ((h * segment_count_length) >> 64) & MASK64
    return h0, (h0 + segment_length) ^ ((h >> 18) & mask), (h0 + 2 * segment_length) ^ (h & mask)


def fingerprint(h):
    """The 16-bit fingerprint of hash ``h``."""
    return (h ^ (h >> 32)) & 0xFFFF


def check_params(segment_length, segment_count, array_length, content_length=None):
    """Raise ListFormatError unless the parameters describe a filter a device can read safely."""
    for name, v in (("segment_length", segment_length), ("segment_count", segment_count),
                    ("array_length", array_length)):
        if type(v) is not int or v < 1:
            raise ListFormatError("fuse filter field '%s' must be a positive integer, got %r" % (name, v))
    if segment_length & (segment_length - 1) or not 4 <= segment_length <= MAX_SEGMENT_LENGTH:
        raise ListFormatError("fuse filter segment_length %d is not a power of two in 4..%d"
                              % (segment_length, MAX_SEGMENT_LENGTH))
    if array_length > MAX_ARRAY_LENGTH or array_length != (segment_count + 2) * segment_length:
        raise ListFormatError("fuse filter array_length %d is not (segment_count + 2) x segment_length "
                              "(%d) or is over %d" % (array_length, (segment_count + 2) * segment_length,
                                                      MAX_ARRAY_LENGTH))
    if content_length is not None and content_length != 2 * array_length:
        raise ListFormatError("content length %d does not fit a fuse filter of %d fingerprints"
                              % (content_length, array_length))


class Fuse16:
    """A binary fuse filter with 16-bit fingerprints in the portable layout (read-only)."""

    def __init__(self, salt, segment_length, segment_count, array_length, content):
        if len(salt) != SALT_BYTES:
            raise ListFormatError("salt must be %d bytes, got %d" % (SALT_BYTES, len(salt)))
        check_params(segment_length, segment_count, array_length, len(content))
        self.salt = bytes(salt)
        self.s0, self.s1 = u64_pair(salt)
        self.segment_length = segment_length
        self.segment_count = segment_count
        self.segment_count_length = segment_count * segment_length
        self.array_length = array_length
        self.content = content

    def _word(self, i):
        c = self.content
        return c[2 * i] | (c[2 * i + 1] << 8)

    def __contains__(self, key):
        h = key_hash(key, self.s0, self.s1)
        a, b, c = slots(h, self.segment_length, self.segment_count_length)
        return (self._word(a) ^ self._word(b) ^ self._word(c)) == fingerprint(h)

    def contains(self, key):
        """True when ``key`` may be in the filter (false positives at 2^-16)."""
        return key in self
