"""Bloom filter with a portable bit layout and salted bit positions (MicroPython-safe).

Owns: the position function, sizing, single-key add/lookup on a ``bytearray``. Must not touch: files,
signatures, numpy (the vectorised twin of ``positions`` lives in ``agent.matching.bloom_batch`` and must stay
bit-for-bit identical to this one; the golden list file pins both).

Layout (docs/list-format.md):
- A key is 16 bytes. Exact lists use the first 16 bytes of the digest (an MD5 is exactly that);
  perceptual lists use LSH band keys (``agent.core.lsh``).
- The salt is 16 random bytes per list, stored in the manifest; ``s0``/``s1`` and ``k0``/``k1`` are the
  two little-endian unsigned 64-bit halves of salt and key.
- ``x = fmix64(k1 ^ s1)``, ``h1 = fmix64(k0 ^ s0 ^ x)``, ``h2 = fmix64(h1 ^ GOLDEN) | 1``
  where fmix64 is MurmurHash3's 64-bit finaliser and all arithmetic is modulo 2**64.
- Probe i (0 <= i < k): ``g = fmix64((h1 + i * h2) mod 2**64) >> 32`` and ``pos = (g * m) >> 32``
  (Lemire's multiply-shift range reduction: no division, and exact in uint64 for m < 2**32).
  Mixing every probe again costs a little per probe but keeps probes independent: plain double
  hashing puts a key's probes on an arithmetic progression, and in a small filter two keys then share
  whole progressions often enough to raise false positives far above the design rate (measured 170x
  at 28 keys, 2.6x at 2,800).
- Bit ``pos`` lives in byte ``pos >> 3`` at bit ``pos & 7`` (least significant bit first).
Why these choices: 64-bit multiply, xor and shift are all numpy can vectorise on uint64 and all
MicroPython's big integers need; no division keeps batch lookups fast on ARM.
"""

try:
    from math import log, ceil
except ImportError:  # pragma: no cover
    from umath import log, ceil  # noqa: F401

try:
    from agent.core.errors import ListFormatError
except ImportError:  # MicroPython: the core is installed as package ``core``
    from core.errors import ListFormatError

MASK64 = 0xFFFFFFFFFFFFFFFF
GOLDEN = 0x9E3779B97F4A7C15
FMIX_C1 = 0xFF51AFD7ED558CCD
FMIX_C2 = 0xC4CEB9FE1A85EC53
MAX_BITS = 0xFFFFFFFF  # m must stay below 2**32 for the multiply-shift reduction
KEY_BYTES = 16
SALT_BYTES = 16
LN2 = 0.6931471805599453


def fmix64(x):
    """MurmurHash3's 64-bit finaliser: an invertible mix of all input bits into all output bits."""
    x ^= x >> 33
    x = (x * FMIX_C1) & MASK64
    x ^= x >> 33
    x = (x * FMIX_C2) & MASK64
    x ^= x >> 33
    return x


def u64_pair(b):
    """The two little-endian unsigned 64-bit halves of 16 bytes."""
    return int.from_bytes(bytes(b[0:8]), "little"), int.from_bytes(bytes(b[8:16]), "little")


def optimal_parameters(n, fp_rate):
    """Bits and probe count (m, k) of the optimal Bloom filter for n entries at fp_rate."""
    if n < 1:
        n = 1
    if not (0.0 < fp_rate < 1.0):
        raise ListFormatError("false-positive rate must be between 0 and 1, got %r" % (fp_rate,))
    m = int(ceil(-n * log(fp_rate) / (LN2 * LN2)))
    if m < 64:
        m = 64
    if m > MAX_BITS:
        raise ListFormatError("filter of %d bits is over the 2**32-bit limit; split the list" % m)
    k = int(round(m / n * LN2))
    if k < 1:
        k = 1
    return m, k


def expected_fp_rate(m, k, n):
    """The design false-positive rate of a filter of m bits and k probes holding n entries."""
    try:
        from math import exp
    except ImportError:  # pragma: no cover
        from umath import exp
    return (1.0 - exp(-k * n / m)) ** k


class Bloom:
    """A Bloom filter over 16-byte keys with the portable layout described in the module docstring."""

    def __init__(self, m, k, salt, bits=None):
        if not (64 <= m <= MAX_BITS):
            raise ListFormatError("filter size m=%d bits is out of range" % m)
        if not (1 <= k <= 64):
            raise ListFormatError("probe count k=%d is out of range 1..64" % k)
        if len(salt) != SALT_BYTES:
            raise ListFormatError("salt must be %d bytes, got %d" % (SALT_BYTES, len(salt)))
        nbytes = (m + 7) >> 3
        if bits is None:
            bits = bytearray(nbytes)
        elif len(bits) != nbytes:
            raise ListFormatError("filter content is %d bytes; m=%d needs %d" % (len(bits), m, nbytes))
        self.m = m
        self.k = k
        self.salt = bytes(salt)
        self.s0, self.s1 = u64_pair(salt)
        self.bits = bits

    def hashes(self, key):
        """The pair (h1, h2) that all probe positions of ``key`` derive from."""
        if len(key) != KEY_BYTES:
            raise ValueError("Bloom keys are %d bytes, got %d" % (KEY_BYTES, len(key)))
        k0, k1 = u64_pair(key)
        x = fmix64(k1 ^ self.s1)
        h1 = fmix64(k0 ^ self.s0 ^ x)
        h2 = fmix64(h1 ^ GOLDEN) | 1
        return h1, h2

    def positions(self, key):
        """The k bit positions of ``key``."""
        h1, h2 = self.hashes(key)
        m = self.m
        out = []
        for i in range(self.k):
            g = fmix64((h1 + i * h2) & MASK64) >> 32
            out.append((g * m) >> 32)
        return out

    def add(self, key):
        """Set the bits of ``key``."""
        bits = self.bits
        for p in self.positions(key):
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, key):
        bits = self.bits
        h1, h2 = self.hashes(key)
        m = self.m
        for i in range(self.k):
            p = ((fmix64((h1 + i * h2) & MASK64) >> 32) * m) >> 32
            if not (bits[p >> 3] >> (p & 7)) & 1:
                return False
        return True

    def contains(self, key):
        """True when ``key`` may be in the filter (false positives at the design rate)."""
        return key in self

    def popcount(self):
        """Number of set bits (for statistics)."""
        total = 0
        for b in self.bits:
            while b:
                b &= b - 1
                total += 1
        return total
