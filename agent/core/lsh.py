"""Locality-sensitive keys for perceptual lists (PDQ, neural), and short keys for confirmation (MicroPython-safe).

Owns: how a 256-bit PDQ hash or a 128-bit neural code becomes Bloom keys and band probes (the values confirmation starts from).
Must not touch: numpy (``agent.matching.lsh_batch`` vectorises the same functions) or matching policy.

A PDQ hash is 32 bytes as the reference prints it in hex; bit i (DCT coefficient i, row-major) is
``(int.from_bytes(h, "big") >> i) & 1``. With B bands, band j holds bits j, j+B, j+2B, ... (interleaved,
so every band samples low and high frequencies alike); bit t of the band value is hash bit j + t*B.
Two hashes within Hamming distance d < B share at least one band exactly (pigeonhole); multi-probe on
the least reliable bits raises recall beyond that. Band j with value v becomes the Bloom key
``pack("<QQ", v, TAG | B << 8 | j)``.

A neural code (agent.hashing.neural) is 16 bytes with the same bit numbering; its bands are cut the
same way from its 128 bits, and its keys carry ``NEURAL_TAG`` instead of ``TAG``, so a neural band can
never answer for a PDQ band (or a digest) even in a filter that held both. ``LAYOUT`` maps a perceptual
signal to (hash bits, tag); every band function takes ``nbits``/``tag`` and defaults to PDQ's.
"""

import struct

TAG = 0x5044510000000000  # "PDQ" in the high bytes keeps band keys apart from digest keys
HASH_BITS = 256
NEURAL_TAG = 0x4E45550000000000  # "NEU": neural band keys never meet PDQ's
NEURAL_BITS = 128
LAYOUT = {"pdq": (HASH_BITS, TAG), "neural": (NEURAL_BITS, NEURAL_TAG)}


def layout(signal):
    """(hash bits, Bloom tag) of a perceptual signal; ValueError for any other."""
    if signal not in LAYOUT:
        raise ValueError("signal %r has no LSH band layout" % (signal,))
    return LAYOUT[signal]


def hash_int(h, nbits=HASH_BITS):
    """The integer of an ``nbits``-bit hash (bit i = coefficient i); a PDQ hash by default."""
    if len(h) * 8 != nbits:
        raise ValueError("a %d-bit hash is %d bytes, got %d" % (nbits, nbits // 8, len(h)))
    return int.from_bytes(bytes(h), "big")


def band_bits(bands, j, nbits=HASH_BITS):
    """The hash bit indices that make up band j."""
    return list(range(j, nbits, bands))


def band_values(h, bands, nbits=HASH_BITS):
    """The B band values of an ``nbits``-bit hash (32 bytes for PDQ, 16 for neural)."""
    x = hash_int(h, nbits)
    out = []
    for j in range(bands):
        v = 0
        t = 0
        for i in range(j, nbits, bands):
            v |= ((x >> i) & 1) << t
            t += 1
        out.append(v)
    return out


def band_key(bands, j, value, tag=TAG):
    """The 16-byte Bloom key of band j holding ``value``."""
    return struct.pack("<QQ", value, tag | (bands << 8) | j)


def band_keys(h, bands, nbits=HASH_BITS, tag=TAG):
    """The B Bloom keys of a hash (no probing)."""
    return [band_key(bands, j, v, tag) for j, v in enumerate(band_values(h, bands, nbits))]


def signal_band_keys(signal, h, bands):
    """The B Bloom keys of a perceptual signal's hash, in that signal's layout."""
    nbits, tag = layout(signal)
    return band_keys(h, bands, nbits, tag)


EXACT_BAND = 0xFFFF  # the "band" of an exact digest: one probe, the whole digest


def entry_bands(signal, h, lsh):
    """The probes under which an entry with hash ``h`` is found: ``[(EXACT_BAND, digest)]`` for an
    exact list, ``[(band, value), ...]`` for a perceptual one (``lsh``: the list's LSH parameters).

    The one definition for device and hub: the scanner's probes of an image, the hub's sealed records
    and the OPRF inputs (agent.confirm.sealed) all start from it.
    """
    if lsh is None:
        return [(EXACT_BAND, bytes(h))]
    nbits = layout(signal)[0]
    return [(j, v) for j, v in enumerate(band_values(h, lsh["bands"], nbits))]


def hamming(a, b):
    """Hamming distance of two equal-length byte strings."""
    if len(a) != len(b):
        raise ValueError("hashes differ in length")
    x = int.from_bytes(bytes(a), "big") ^ int.from_bytes(bytes(b), "big")
    n = 0
    while x:
        x &= x - 1
        n += 1
    return n
