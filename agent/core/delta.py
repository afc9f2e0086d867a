"""List deltas: the byte layout, Rice coding of bit positions, and applying a delta (MicroPython-safe).

Owns the delta format only. It knows nothing about list manifests or signatures: the result of a
delta is a byte string whose SHA-256 the delta names, and the caller then verifies that result as a
full signed list file (so a delta never needs to be trusted on its own).

Why XOR'ed bit positions: consecutive versions of a list keep the same Bloom parameters (m, k,
salt), so moving from one version to the next flips a sparse, nearly uniformly spread set of filter
bits. Gaps between sorted uniform positions are geometric, and a Rice code (Golomb with a power of
two) is within a few percent of the entropy of such gaps while being trivial to decode on a router.

Byte layout (all integers little-endian)::

    magic      4  b"GWD1"
    src_len    u32   length of the source file the delta applies to
    src_sha256 32    SHA-256 of that source file
    dst_len    u32   length of the result
    dst_sha256 32    SHA-256 of the result
    nseg       u32   number of segments; the result is their concatenation
    segment:
      kind u8 = 0 (literal):  len u32, then len bytes copied verbatim
      kind u8 = 1 (xor-copy): src_off u32, len u32, nbits u32, k u8, coded_len u32, coded bytes
          the result is source[src_off:src_off+len] with the nbits listed bit positions flipped;
          position p is bit (p & 7) (LSB first) of byte (p >> 3) of that slice. Positions are sorted
          and distinct; they are stored as gaps g = p - previous - 1 (previous = -1 at the start),
          each Rice-coded with parameter k: q = g >> k ones, one zero, then the k low bits of g,
          least significant first. Bits are packed LSB first into bytes; the last byte is padded
          with zeros.
"""

try:
    import hashlib
except ImportError:  # pragma: no cover - MicroPython
    import uhashlib as hashlib

try:
    import struct
except ImportError:  # pragma: no cover - MicroPython
    import ustruct as struct

try:
    from agent.core.errors import GatewatchError, DeltaError  # noqa: F401
except ImportError:  # pragma: no cover - MicroPython
    from core.errors import GatewatchError, DeltaError  # noqa: F401

MAGIC = b"GWD1"
LITERAL = 0
XOR_COPY = 1
HEADER_LEN = 4 + 4 + 32 + 4 + 32 + 4



def _sha256(data):
    h = hashlib.sha256()
    h.update(data)
    return h.digest()


def rice_parameter(nbits, span):
    """Rice parameter k for ``nbits`` positions spread over ``span`` bits (mean gap -> k)."""
    if nbits <= 0 or span <= nbits:
        return 0
    mean = (span - nbits) / nbits
    # The optimum Golomb divisor is about mean * ln 2; the Rice code rounds it to a power of two.
    target = mean * 0.6931
    k = 0
    while (1 << (k + 1)) <= target:
        k += 1
    return k


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, value, nbits):
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def ones(self, count):
        while count >= 16:
            self.write(0xFFFF, 16)
            count -= 16
        if count:
            self.write((1 << count) - 1, count)

    def finish(self):
        if self.n:
            self.out.append(self.acc & 0xFF)
            self.acc = 0
            self.n = 0
        return bytes(self.out)


def rice_encode(positions, k):
    """Rice-code sorted distinct non-negative ``positions`` as gaps; returns the packed bytes."""
    w = _BitWriter()
    prev = -1
    mask = (1 << k) - 1
    for p in positions:
        g = p - prev - 1
        if g < 0:
            raise DeltaError("positions must be sorted and distinct")
        w.ones(g >> k)
        w.write(0, 1)
        if k:
            w.write(g & mask, k)
        prev = p
    return w.finish()


def rice_decode(coded, count, k, limit):
    """Decode ``count`` positions from ``coded``; each must be < ``limit``. Returns a list."""
    out = []
    nbytes = len(coded)
    pos = 0  # bit index into coded
    total = nbytes * 8
    prev = -1
    mask_k = (1 << k) - 1
    for _ in range(count):
        # unary part: count ones up to the first zero, a byte at a time where possible
        q = 0
        while True:
            if pos >= total:
                raise DeltaError("delta positions are truncated")
            bi = pos >> 3
            off = pos & 7
            byte = coded[bi] >> off
            avail = 8 - off
            if byte == (1 << avail) - 1:
                q += avail
                pos += avail
                continue
            # find the first zero bit in byte
            while byte & 1:
                q += 1
                pos += 1
                byte >>= 1
            pos += 1  # the terminating zero
            break
        r = 0
        if k:
            if pos + k > total:
                raise DeltaError("delta positions are truncated")
            got = 0
            while got < k:
                bi = pos >> 3
                off = pos & 7
                take = 8 - off
                if take > k - got:
                    take = k - got
                r |= ((coded[bi] >> off) & ((1 << take) - 1)) << got
                got += take
                pos += take
            r &= mask_k
        p = prev + 1 + ((q << k) | r)
        if p >= limit:
            raise DeltaError("delta flips bit %d outside its %d-bit segment" % (p, limit))
        out.append(p)
        prev = p
    return out


def xor_positions(a, b):
    """Sorted bit positions where equal-length byte strings ``a`` and ``b`` differ (pure Python)."""
    if len(a) != len(b):
        raise DeltaError("xor_positions needs equal lengths")
    out = []
    for i in range(len(a)):
        x = a[i] ^ b[i]
        if x:
            base = i << 3
            bit = 0
            while x:
                if x & 1:
                    out.append(base + bit)
                x >>= 1
                bit += 1
    return out


def xor_segment(src_off, length, positions, k=None):
    """One xor-copy segment as a tuple for ``build``; ``k`` is chosen from the density when None."""
    if k is None:
        k = rice_parameter(len(positions), length * 8)
    return (XOR_COPY, src_off, length, len(positions), k, rice_encode(positions, k))


def literal_segment(data):
    """One literal segment as a tuple for ``build``."""
    return (LITERAL, bytes(data))


def build(source, result, segments):
    """Serialise a delta that turns ``source`` into ``result`` through ``segments``."""
    parts = [MAGIC, struct.pack("<I", len(source)), _sha256(source), struct.pack("<I", len(result)),
             _sha256(result), struct.pack("<I", len(segments))]
    for seg in segments:
        if seg[0] == LITERAL:
            parts.append(struct.pack("<BI", LITERAL, len(seg[1])))
            parts.append(seg[1])
        else:
            _, off, length, nbits, k, coded = seg
            parts.append(struct.pack("<BIIIBI", XOR_COPY, off, length, nbits, k, len(coded)))
            parts.append(coded)
    return b"".join(parts)


def encode(source, result):
    """A delta from ``source`` to ``result`` knowing nothing of their layout (pure Python).

    Aligns the two at their ends (a list file keeps its filter at the end and its variable-length
    manifest in front) and sends the differing head literally. The hub's encoder in tools.delta
    does the same with numpy and knows the list layout; both produce deltas ``apply`` reads.
    """
    tail = min(len(source), len(result))
    head = len(result) - tail
    segs = []
    if head:
        segs.append(literal_segment(result[:head]))
    if tail:
        positions = xor_positions(source[len(source) - tail:], result[head:])
        segs.append(xor_segment(len(source) - tail, tail, positions))
    return build(source, result, segs)


def parse_header(delta):
    """Return (src_len, src_sha256, dst_len, dst_sha256, nseg) of a delta, checking the magic."""
    if len(delta) < HEADER_LEN or delta[:4] != MAGIC:
        raise DeltaError("not a gatewatch delta (bad magic or truncated header)")
    src_len = struct.unpack("<I", delta[4:8])[0]
    src_sha = bytes(delta[8:40])
    dst_len = struct.unpack("<I", delta[40:44])[0]
    dst_sha = bytes(delta[44:76])
    nseg = struct.unpack("<I", delta[76:80])[0]
    return src_len, src_sha, dst_len, dst_sha, nseg


def apply(source, delta, max_len=None):
    """Apply ``delta`` to ``source`` and return the result, verified against the delta's SHA-256.

    Refuses (DeltaError) a delta for another source, a result over ``max_len``, any malformed
    segment, and a result whose digest differs from the one the delta names.
    """
    src_len, src_sha, dst_len, dst_sha, nseg = parse_header(delta)
    if src_len != len(source) or src_sha != _sha256(source):
        raise DeltaError("delta was made for another version of this list (source digest differs)")
    if max_len is not None and dst_len > max_len:
        raise DeltaError("delta result of %d bytes exceeds the cap of %d bytes" % (dst_len, max_len))
    out = bytearray()
    pos = HEADER_LEN
    n = len(delta)
    for _ in range(nseg):
        if pos + 1 > n:
            raise DeltaError("delta is truncated")
        kind = delta[pos]
        if kind == LITERAL:
            if pos + 5 > n:
                raise DeltaError("delta is truncated")
            length = struct.unpack("<I", delta[pos + 1:pos + 5])[0]
            pos += 5
            if pos + length > n:
                raise DeltaError("delta literal is truncated")
            out.extend(delta[pos:pos + length])
            pos += length
        elif kind == XOR_COPY:
            if pos + 18 > n:
                raise DeltaError("delta is truncated")
            off, length, nbits, k, clen = struct.unpack("<IIIBI", delta[pos + 1:pos + 18])
            pos += 18
            if off + length > len(source):
                raise DeltaError("delta segment reaches past the end of the source")
            if pos + clen > n:
                raise DeltaError("delta positions are truncated")
            if k > 31:
                raise DeltaError("delta Rice parameter %d is out of range" % k)
            if nbits > length * 8:
                raise DeltaError("delta flips more bits than its segment holds")
            positions = rice_decode(delta[pos:pos + clen], nbits, k, length * 8)
            pos += clen
            start = len(out)
            out.extend(source[off:off + length])
            for p in positions:
                out[start + (p >> 3)] ^= 1 << (p & 7)
        else:
            raise DeltaError("unknown delta segment kind %d" % kind)
        if len(out) > dst_len:
            raise DeltaError("delta result is longer than announced")
    if pos != n:
        raise DeltaError("delta has %d trailing bytes" % (n - pos))
    if len(out) != dst_len:
        raise DeltaError("delta result is %d bytes, announced %d" % (len(out), dst_len))
    if _sha256(out) != dst_sha:
        raise DeltaError("delta result does not match its digest")
    return bytes(out)
