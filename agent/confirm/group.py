"""The ristretto255 group and its scalars, through libsodium (ctypes).

Owns: finding libsodium, the dozen group and scalar operations private confirmation needs, and
refusing anything that is not a canonical group element. Must not touch: the OPRF protocol
(``agent.confirm.oprf``), messages, keys on disk.

Why libsodium through ctypes: ristretto255 (RFC 9496) needs constant-time field arithmetic that no
Python library on a router offers. libsodium has it since 1.0.18 (Debian 12: libsodium23; OpenWrt:
the ``libsodium`` package, built with ristretto255 unless its LIBSODIUM_MINIMAL option is set), and
Python's ctypes (OpenWrt: python3-ctypes) reaches it without a compiler. PyNaCl wraps libsodium
too, but binds no ristretto255 function (checked: 1.6.2), and OpenWrt's python3-pynacl is built
minimal. Where the library or its ristretto255 functions are missing, ``load()`` raises
``CryptoUnavailable`` with what to install: the device then says so in its status and asks the hub
nothing (never a silent fall back to a protocol that shows the hub its hashes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Optional

from agent.core.errors import ConfirmError, CryptoUnavailable

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
HASH_BYTES = 64  # crypto_core_ristretto255_HASHBYTES: input of the one-way map
# the group order L = 2^252 + 27742317777372353535851937790883648493
ORDER = 2 ** 252 + 27742317777372353535851937790883648493

_FUNCTIONS = ("crypto_core_ristretto255_from_hash", "crypto_core_ristretto255_is_valid_point",
              "crypto_core_ristretto255_add", "crypto_core_ristretto255_random",
              "crypto_core_ristretto255_scalar_random", "crypto_core_ristretto255_scalar_invert",
              "crypto_core_ristretto255_scalar_reduce", "crypto_core_ristretto255_scalar_mul",
              "crypto_core_ristretto255_scalar_add", "crypto_core_ristretto255_scalar_sub",
              "crypto_scalarmult_ristretto255", "crypto_scalarmult_ristretto255_base")

_lock = threading.Lock()
_lib = None
_error: Optional[str] = None


def _candidates():
    env = os.environ.get("GATEWATCH_LIBSODIUM")
    if env:
        yield env
        return
    found = ctypes.util.find_library("sodium")
    if found:
        yield found
    for name in ("libsodium.so.26", "libsodium.so.23", "libsodium.so"):
        yield name


def load():
    """The loaded libsodium; CryptoUnavailable (with what to install) when it cannot be used."""
    global _lib, _error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        reasons = []
        for name in _candidates():
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                reasons.append("%s: %s" % (name, exc))
                continue
            missing = [f for f in _FUNCTIONS if not hasattr(lib, f)]
            if missing:
                reasons.append("%s has no %s (a minimal build, or older than 1.0.18)" % (name, missing[0]))
                continue
            if lib.sodium_init() < 0:
                reasons.append("%s: sodium_init failed" % name)
                continue
            for f in ("crypto_core_ristretto255_is_valid_point",):
                getattr(lib, f).restype = ctypes.c_int
            _lib = lib
            return lib
        _error = ("private confirmation needs libsodium >= 1.0.18 with ristretto255 (Debian: apt install "
                  "libsodium23; OpenWrt: opkg install libsodium python3-ctypes, not built minimal); tried "
                  + "; ".join(reasons or ["no libsodium found"]))
        raise CryptoUnavailable(_error)


def available() -> bool:
    """True when ``load()`` works here."""
    try:
        load()
        return True
    except CryptoUnavailable:
        return False


def _out(n: int):
    return ctypes.create_string_buffer(n)


def _bytes(value, n: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != n:
        raise ConfirmError("%s must be %d bytes" % (what, n))
    return bytes(value)


_IDENTITY = bytes(ELEMENT_BYTES)


def is_element(p) -> bool:
    """True for the canonical encoding of a group element other than the identity."""
    if not isinstance(p, (bytes, bytearray)) or len(p) != ELEMENT_BYTES or bytes(p) == _IDENTITY:
        return False
    return load().crypto_core_ristretto255_is_valid_point(bytes(p)) == 1


def check_element(p, what: str = "group element") -> bytes:
    """``p`` as bytes if it is a canonical non-identity element; ConfirmError otherwise."""
    if not is_element(p):
        raise ConfirmError("%s is not a valid ristretto255 element" % what)
    return bytes(p)


def from_hash(uniform: bytes) -> bytes:
    """The one-way map of 64 uniform bytes to a group element (RFC 9496 section 4.3.4)."""
    out = _out(ELEMENT_BYTES)
    load().crypto_core_ristretto255_from_hash(out, _bytes(uniform, HASH_BYTES, "hash input"))
    return out.raw


def random_element() -> bytes:
    """A uniformly random group element (padding that looks like any blinded value)."""
    out = _out(ELEMENT_BYTES)
    load().crypto_core_ristretto255_random(out)
    return out.raw


def add(p: bytes, q: bytes) -> bytes:
    """p + q."""
    out = _out(ELEMENT_BYTES)
    if load().crypto_core_ristretto255_add(out, check_element(p), check_element(q)) != 0:
        raise ConfirmError("cannot add these elements")
    return out.raw


def mul(scalar: bytes, p: bytes) -> bytes:
    """scalar * p; ConfirmError for an invalid element or an identity result."""
    out = _out(ELEMENT_BYTES)
    if load().crypto_scalarmult_ristretto255(out, _bytes(scalar, SCALAR_BYTES, "scalar"), check_element(p)) != 0:
        raise ConfirmError("scalar multiplication gave the identity")
    return out.raw


def mul_base(scalar: bytes) -> bytes:
    """scalar * G."""
    out = _out(ELEMENT_BYTES)
    if load().crypto_scalarmult_ristretto255_base(out, _bytes(scalar, SCALAR_BYTES, "scalar")) != 0:
        raise ConfirmError("the zero scalar has no public element")
    return out.raw


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar."""
    out = _out(SCALAR_BYTES)
    lib = load()
    while True:
        lib.crypto_core_ristretto255_scalar_random(out)
        if any(out.raw):
            return out.raw


def scalar_reduce(wide: bytes) -> bytes:
    """64 little-endian bytes reduced mod L."""
    out = _out(SCALAR_BYTES)
    load().crypto_core_ristretto255_scalar_reduce(out, _bytes(wide, 64, "wide scalar"))
    return out.raw


def scalar_invert(s: bytes) -> bytes:
    """1/s mod L; ConfirmError for zero."""
    out = _out(SCALAR_BYTES)
    if load().crypto_core_ristretto255_scalar_invert(out, _bytes(s, SCALAR_BYTES, "scalar")) != 0:
        raise ConfirmError("zero has no inverse")
    return out.raw


def scalar_mul(a: bytes, b: bytes) -> bytes:
    """a * b mod L."""
    out = _out(SCALAR_BYTES)
    load().crypto_core_ristretto255_scalar_mul(out, _bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))
    return out.raw


def scalar_add(a: bytes, b: bytes) -> bytes:
    """a + b mod L."""
    out = _out(SCALAR_BYTES)
    load().crypto_core_ristretto255_scalar_add(out, _bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))
    return out.raw


def scalar_sub(a: bytes, b: bytes) -> bytes:
    """a - b mod L."""
    out = _out(SCALAR_BYTES)
    load().crypto_core_ristretto255_scalar_sub(out, _bytes(a, SCALAR_BYTES, "scalar"), _bytes(b, SCALAR_BYTES, "scalar"))
    return out.raw


def check_scalar(s, what: str = "scalar") -> bytes:
    """``s`` as bytes if it is a canonical scalar in [1, L); ConfirmError otherwise."""
    s = _bytes(s, SCALAR_BYTES, what)
    n = int.from_bytes(s, "little")
    if not 0 < n < ORDER:
        raise ConfirmError("%s is not a canonical non-zero scalar" % what)
    return s
