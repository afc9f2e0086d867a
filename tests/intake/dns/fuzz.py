"""Mutated DNS queries for the forwarder's wire handling (tests/intake/dns/test_fuzz.py, bench/fuzz_names.py).

Seeds are real queries (A, AAAA, HTTPS, with and without EDNS, long and odd names); mutations are bit
flips, byte insertions and deletions, truncation, count fields set to edge values, compression pointers
planted anywhere (loops, forward, out of bounds), random label lengths and plain random bytes.
"""

from __future__ import annotations

import random
import struct

import dns.message

from agent.intake.dns.message import BlockAnswer, read_query


def seeds():
    out = []
    for name, rdtype, edns in (("www.example.org", "A", -1), ("a.b.c.blocked.example.org", "AAAA", 0),
                               ("x" * 63 + ".example.net", "HTTPS", 0), ("xn--bcher-kva.example", "TXT", -1),
                               ("example.org", "ANY", 0)):
        q = dns.message.make_query(name, rdtype, use_edns=edns)
        q.id = 0x5A5A  # fixed: the same seed gives the same cases every run
        out.append(q.to_wire())
    return out


def mutate(rng: random.Random, wire: bytes) -> bytes:
    b = bytearray(wire)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8)
        if kind == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif kind == 3:
            del b[rng.randrange(len(b) + 1):]
        elif kind == 4 and len(b) >= 12:
            field = 4 + 2 * rng.randrange(4)
            b[field:field + 2] = struct.pack("!H", rng.choice((0, 1, 2, 255, 256, 32767, 65535)))
        elif kind == 5 and len(b) > 13:
            i = rng.randrange(12, len(b) - 1)
            b[i:i + 2] = struct.pack("!H", 0xC000 | rng.choice((12, i, i + 2, 0x3FFF, rng.randrange(0x4000))))
        elif kind == 6 and len(b) > 12:
            b[rng.randrange(12, len(b))] = rng.choice((0, 63, 64, 191, 192, 255))
        else:
            b = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 80)))
    return bytes(b[:65535])


def check_one(wire: bytes, block: BlockAnswer) -> str:
    """Feed one message; returns what happened ('lookup', 'error', 'drop'); raises on a defect."""
    q, answer = read_query(wire)
    if q is not None:
        assert answer is None
        out = block.answer(q)  # a block answer for whatever parsed must never fail
        assert out[:2] == wire[:2] and out[2] & 0x80
        return "lookup"
    if answer is not None:
        assert len(answer) == 12 and answer[:2] == wire[:2] and answer[2] & 0x80, (wire, answer)
        return "error"
    return "drop"


def run(cases: int, seed: int) -> dict:
    """``cases`` mutated messages through read_query and the block answer; counts per outcome."""
    rng = random.Random(seed)
    base = seeds()
    blocks = (BlockAnswer(), BlockAnswer(["192.0.2.80", "2001:db8::80"]))
    counts = {"lookup": 0, "error": 0, "drop": 0}
    for i in range(cases):
        wire = mutate(rng, rng.choice(base))
        counts[check_one(wire, blocks[i & 1])] += 1
    return counts
