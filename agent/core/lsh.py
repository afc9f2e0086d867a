"""Locality-sensitive keys for perceptual (PDQ) lists, and short keys for confirmation (MicroPython-safe).

Owns: how a 256-bit PDQ hash becomes Bloom keys, and the short-key strings a device sends to the hub.
Must not touch: numpy (``agent.matching.lsh_batch`` vectorises the same functions) or matching policy.

A PDQ hash is 32 bytes as the reference prints it in hex; bit i (DCT coefficient i, row-major) is
``(int.from_bytes(h, "big") >> i) & 1``. With B bands, band j holds bits j, j+B, j+2B, ... (interleaved,
so every band samples low and high frequencies alike); bit t of the band value is hash bit j + t*B.
Two hashes within Hamming distance d < B share at least one band exactly (pigeonhole); multi-probe on
the least reliable bits raises recall beyond that. Band j with value v becomes the Bloom key
``pack("<QQ", v, TAG | B << 8 | j)``.
"""

import struct

TAG = 0x5044510000000000  # "PDQ" in the high bytes keeps band keys apart from digest keys
HASH_BITS = 256


def hash_int(h):
    """The 256-bit integer of a 32-byte PDQ hash (bit i = coefficient i)."""
    if len(h) != 32:
        raise ValueError("a PDQ hash is 32 bytes, got %d" % len(h))
    return int.from_bytes(bytes(h), "big")


def band_bits(bands, j):
    """The hash bit indices that make up band j."""
    return list(range(j, HASH_BITS, bands))


def band_values(h, bands):
    """The B band values of a 32-byte hash."""
    x = hash_int(h)
    out = []
    for j in range(bands):
        v = 0
        t = 0
        for i in range(j, HASH_BITS, bands):
            v |= ((x >> i) & 1) << t
            t += 1
        out.append(v)
    return out


def band_key(bands, j, value):
    """The 16-byte Bloom key of band j holding ``value``."""
    return struct.pack("<QQ", value, TAG | (bands << 8) | j)


def band_keys(h, bands):
    """The B Bloom keys of a hash (no probing)."""
    return [band_key(bands, j, v) for j, v in enumerate(band_values(h, bands))]


def short_key(signal, band, value, key_bits=64):
    """The short key of a band hit: 'pdq:<band>:<hex of the low key_bits bits of the band value>'.

    The one definition for device and hub (the hub indexes its entries under the same keys), so
    a request never carries more bits of an image than the list's ``key_bits`` allow.
    """
    return "%s:%d:%x" % (signal, band, value & ((1 << key_bits) - 1))


def short_keys(signal, h, lsh):
    """The short keys under which an entry with hash ``h`` is found: one for an exact digest,
    one per band for a perceptual hash (``lsh``: the list's LSH parameters)."""
    if lsh is None:
        return [exact_short_key(signal, h)]
    bits = lsh.get("key_bits", 64)
    return [short_key(signal, j, v, bits) for j, v in enumerate(band_values(h, lsh["bands"]))]


def exact_short_key(signal, digest, nbytes=4):
    """The short key for an exact digest: '<signal>:<hex of its first nbytes bytes>'."""
    return "%s:%s" % (signal, "".join("%02x" % b for b in bytes(digest[:nbytes])))


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
