"""Oblivious pseudorandom functions, RFC 9497, ciphersuite ristretto255-SHA512 (modes OPRF and VOPRF).

Owns: expand_message_xmd (RFC 9380), HashToGroup/HashToScalar, key derivation, Blind/BlindEvaluate/
Finalize, the server's direct Evaluate, and the batched DLEQ proofs of the verifiable mode. Checked
against the RFC's test vectors (tests/confirm/test_oprf.py). Must not touch: what the inputs mean
(``agent.confirm.sealed``), messages and topics, keys on disk.

Why ristretto255: a prime-order group (no cofactor to clear or check), 32-byte elements and scalars,
and libsodium computes it on the router (``agent.confirm.group``); P-256 would need a library that
exposes point arithmetic, which neither ``cryptography`` nor OpenWrt's Python packages do.

Mode OPRF (0) serves confirmation: the hub cannot tell one device from another, so a per-request key
would gain a lying hub nothing a device could be harmed by (a wrong key only makes the device's
lookup find nothing). Mode VOPRF (1) serves token issuance (``agent.confirm.tokens``): there the hub
knows who asks, and the proof pins every evaluation to the one public key all devices see, so that
the hub cannot mark one device's tokens with a key of its own.
"""

from __future__ import annotations

import hashlib
from typing import List, Sequence, Tuple

from agent.confirm import group
from agent.core.errors import ConfirmError

MODE_OPRF = 0
MODE_VOPRF = 1
SUITE = b"ristretto255-SHA512"
OUTPUT_BYTES = 64
PROOF_BYTES = 64
MAX_INPUT = 0xFFFF


def i2osp(n: int, length: int) -> bytes:
    """Big-endian fixed-length encoding (RFC 8017 I2OSP)."""
    return n.to_bytes(length, "big")


def context(mode: int) -> bytes:
    """contextString of RFC 9497 section 3.1."""
    if mode not in (MODE_OPRF, MODE_VOPRF):
        raise ValueError("unsupported OPRF mode %r" % (mode,))
    return b"OPRFV1-" + i2osp(mode, 1) + b"-" + SUITE


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512."""
    if len(dst) > 255 or length > 255 * 64 or length <= 0:
        raise ValueError("expand_message_xmd: bad DST or length")
    ell = (length + 63) // 64
    dst_prime = dst + i2osp(len(dst), 1)
    b0 = hashlib.sha512(b"\x00" * 128 + msg + i2osp(length, 2) + b"\x00" + dst_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1]))
        blocks.append(hashlib.sha512(mixed + i2osp(i, 1) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(data: bytes, mode: int = MODE_OPRF) -> bytes:
    """HashToGroup: expand_message_xmd to 64 bytes, then ristretto255's one-way map."""
    return group.from_hash(expand_message_xmd(data, b"HashToGroup-" + context(mode), 64))


def hash_to_scalar(data: bytes, mode: int = MODE_OPRF, dst: bytes = None) -> bytes:
    """HashToScalar: expand_message_xmd to 64 bytes, reduced mod the group order."""
    return group.scalar_reduce(expand_message_xmd(data, dst or b"HashToScalar-" + context(mode), 64))


def derive_key_pair(seed: bytes, info: bytes, mode: int = MODE_OPRF) -> Tuple[bytes, bytes]:
    """(skS, pkS) from a 32-byte seed (RFC 9497 section 3.2.1)."""
    if len(seed) != 32:
        raise ValueError("the seed must be 32 bytes")
    derive_input = seed + i2osp(len(info), 2) + info
    for counter in range(256):
        sk = hash_to_scalar(derive_input + i2osp(counter, 1), mode, b"DeriveKeyPair" + context(mode))
        if any(sk):
            return sk, group.mul_base(sk)
    raise ConfirmError("DeriveKeyPairError")


def generate_key_pair() -> Tuple[bytes, bytes]:
    """A fresh random (skS, pkS)."""
    sk = group.random_scalar()
    return sk, group.mul_base(sk)


def _check_input(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_INPUT:
        raise ConfirmError("an OPRF input is at most %d bytes" % MAX_INPUT)
    return bytes(data)


def blind(data: bytes, mode: int = MODE_OPRF, blind_scalar: bytes = None) -> Tuple[bytes, bytes]:
    """(blind, blindedElement) for one input; ``blind_scalar`` only for test vectors."""
    r = blind_scalar if blind_scalar is not None else group.random_scalar()
    return r, group.mul(r, hash_to_group(_check_input(data), mode))


def blind_evaluate(sk: bytes, blinded: bytes) -> bytes:
    """The server's evaluation of one blinded element (refuses anything but a valid element)."""
    return group.mul(sk, group.check_element(blinded, "blinded element"))


def _finish(data: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(i2osp(len(data), 2) + data + i2osp(len(unblinded), 2) + unblinded
                          + b"Finalize").digest()


def finalize(data: bytes, blind_scalar: bytes, evaluated: bytes) -> bytes:
    """The 64-byte OPRF output from the server's answer to one blinded input."""
    n = group.mul(group.scalar_invert(blind_scalar), group.check_element(evaluated, "evaluated element"))
    return _finish(_check_input(data), n)


def evaluate(sk: bytes, data: bytes, mode: int = MODE_OPRF) -> bytes:
    """The output the server computes on its own (what a device gets through blind/finalize)."""
    data = _check_input(data)
    return _finish(data, group.mul(sk, hash_to_group(data, mode)))


# ---------------------------------------------------------------- DLEQ proofs (VOPRF)

def _lp(x: bytes) -> bytes:
    return i2osp(len(x), 2) + x


def _composites(pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes], sk: bytes = None):
    mode = MODE_VOPRF
    seed_dst = b"Seed-" + context(mode)
    seed = hashlib.sha512(_lp(pk) + _lp(seed_dst)).digest()
    m = z = None
    for i, (c, d) in enumerate(zip(blinded, evaluated)):
        di = hash_to_scalar(_lp(seed) + i2osp(i, 2) + _lp(c) + _lp(d) + b"Composite", mode)
        term = group.mul(di, c)
        m = term if m is None else group.add(m, term)
        if sk is None:
            zt = group.mul(di, d)
            z = zt if z is None else group.add(z, zt)
    if m is None:
        raise ConfirmError("a proof needs at least one element")
    if sk is not None:
        z = group.mul(sk, m)
    return m, z


def _challenge(pk: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    return hash_to_scalar(_lp(pk) + _lp(m) + _lp(z) + _lp(t2) + _lp(t3) + b"Challenge", MODE_VOPRF)


def generate_proof(sk: bytes, pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes],
                   r: bytes = None) -> bytes:
    """A batched proof that every evaluated element is sk times its blinded element (c || s)."""
    m, z = _composites(pk, blinded, evaluated, sk)
    r = r if r is not None else group.random_scalar()
    t2 = group.mul_base(r)
    t3 = group.mul(r, m)
    c = _challenge(pk, m, z, t2, t3)
    s = group.scalar_sub(r, group.scalar_mul(c, sk))
    return c + s


def verify_proof(pk: bytes, blinded: Sequence[bytes], evaluated: Sequence[bytes], proof: bytes) -> bool:
    """True when ``proof`` shows the same key (public half ``pk``) evaluated every element."""
    if not isinstance(proof, (bytes, bytearray)) or len(proof) != PROOF_BYTES or len(blinded) != len(evaluated):
        return False
    try:
        for e in list(blinded) + list(evaluated) + [pk]:
            group.check_element(e)
        c, s = bytes(proof[:32]), bytes(proof[32:])
        m, z = _composites(pk, blinded, evaluated)
        t2 = group.add(group.mul_base(s), group.mul(c, pk))
        t3 = group.add(group.mul(s, m), group.mul(c, z))
        return _challenge(pk, m, z, t2, t3) == c
    except ConfirmError:
        return False


def voprf_blind_evaluate(sk: bytes, pk: bytes, blinded: Sequence[bytes], r: bytes = None) -> Tuple[List[bytes], bytes]:
    """(evaluated elements, proof) for a batch of blinded elements (VOPRF mode)."""
    evaluated = [blind_evaluate(sk, b) for b in blinded]
    return evaluated, generate_proof(sk, pk, blinded, evaluated, r)
