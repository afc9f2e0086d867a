"""The log's Merkle tree against RFC 6962/9162's test vectors, every proof of small trees, hostile
proofs refused with a reason, and the leaf layout; MicroPython-safe."""

from tests.core import support

merkle = support.import_core("merkle")
errors = support.import_core("errors")

# The eight leaves of the certificate-transparency test vectors (RFC 6962 reference code).
VECTOR_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
                 bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _hex(b):
    return "".join("%02x" % x for x in b)


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def _tree(n, tag=b"t"):
    hashes = [merkle.leaf_hash(tag + b"%d" % i) for i in range(n)]

    def mth(lo, hi):
        return merkle.root_of(hashes[lo:hi])
    return hashes, mth


def test_rfc_vectors_roots_and_proofs():
    hashes = [merkle.leaf_hash(x) for x in VECTOR_LEAVES]
    for n in range(1, 9):
        assert _hex(merkle.root_of(hashes[:n])) == VECTOR_ROOTS[n - 1]

    def mth(lo, hi):
        return merkle.root_of(hashes[lo:hi])
    assert [_hex(h)[:8] for h in merkle.inclusion_proof(0, 8, mth)] == ["96a296d2", "5f083f0a", "6b47aaf2"]
    assert [_hex(h)[:8] for h in merkle.consistency_proof(6, 8, mth)] == ["0ebc5d34", "ca854ea1", "d37ee418"]
    assert [_hex(h)[:8] for h in merkle.consistency_proof(2, 5, mth)] == ["5f083f0a", "bc1a0643"]
    root8 = _unhex(VECTOR_ROOTS[7])
    merkle.verify_inclusion(hashes[0], 0, 8, merkle.inclusion_proof(0, 8, mth), root8)
    merkle.verify_consistency(6, 8, _unhex(VECTOR_ROOTS[5]), root8, merkle.consistency_proof(6, 8, mth))


def test_every_proof_of_small_trees_verifies():
    hashes, mth = _tree(21)
    roots = [None] + [merkle.root_of(hashes[:n]) for n in range(1, 22)]
    for n in range(1, 22):
        for i in range(n):
            merkle.verify_inclusion(hashes[i], i, n, merkle.inclusion_proof(i, n, mth), roots[n])
        for m in range(1, n + 1):
            merkle.verify_consistency(m, n, roots[m], roots[n], merkle.consistency_proof(m, n, mth))


def test_inclusion_refusals():
    hashes, mth = _tree(13)
    root = merkle.root_of(hashes)
    path = merkle.inclusion_proof(5, 13, mth)
    P = merkle.ProofError
    assert "not lead" in str(support.raises(P, merkle.verify_inclusion, hashes[6], 5, 13, path, root))
    assert "not lead" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 6, 13, path, root))
    assert "shorter" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, path[:-1], root))
    assert "longer" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, path + [root], root))
    assert "not below" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 13, 13, path, root))
    assert "2**48" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 1 << 60, path, root))
    assert "whole number" in str(support.raises(P, merkle.verify_inclusion, hashes[5], True, 13, path, root))
    assert "whole number" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, "13", path, root))
    assert "32-byte" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, path[:1] + [b"x"], root))
    assert "list" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, "abc", root))
    assert "over" in str(support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, [root] * 100000, root))
    # a proof for another leaf of the same tree proves nothing about this one
    other = merkle.inclusion_proof(4, 13, mth)
    support.raises(P, merkle.verify_inclusion, hashes[5], 5, 13, other, root)


def test_consistency_refusals_catch_rewritten_history():
    hashes, mth = _tree(11)
    r6, r11 = merkle.root_of(hashes[:6]), merkle.root_of(hashes)
    proof = merkle.consistency_proof(6, 11, mth)
    P = merkle.ProofError
    # an earlier leaf changed: the new tree no longer extends the old one
    forged = list(hashes)
    forged[2] = merkle.leaf_hash(b"rewritten")

    def forged_mth(lo, hi):
        return merkle.root_of(forged[lo:hi])
    f11 = merkle.root_of(forged)
    e = support.raises(P, merkle.verify_consistency, 6, 11, r6, f11, merkle.consistency_proof(6, 11, forged_mth))
    assert "rewritten" in str(e), e
    assert "fork" in str(support.raises(P, merkle.verify_consistency, 6, 6, r6, merkle.root_of(forged[:6]), []))
    assert "cannot extend" in str(support.raises(P, merkle.verify_consistency, 11, 6, r11, r6, proof))
    assert "empty" in str(support.raises(P, merkle.verify_consistency, 6, 11, r6, r11, []))
    support.raises(P, merkle.verify_consistency, 6, 11, r6, r11, proof[:-1])
    support.raises(P, merkle.verify_consistency, 6, 11, r6, r11, proof + [r6])
    support.raises(P, merkle.verify_consistency, 5, 11, r6, r11, proof)
    support.raises(P, merkle.verify_consistency, 6, 11, r6, r11, [proof[0]] * 70)
    support.raises(P, merkle.verify_consistency, 0, 11, r6, r11, proof)
    merkle.verify_consistency(6, 11, r6, r11, proof)  # and the genuine one still verifies


def test_leaf_layout_round_trip_and_refusals():
    digest = bytes(range(32))
    leaf = merkle.leaf_bytes("hl1", "sha", "sha256", 7, digest)
    assert leaf[:5] == b"GWLF\x01" and len(leaf) == 5 + 4 + 4 + 7 + 8 + 32
    assert merkle.parse_leaf(leaf) == ("hl1", "sha", "sha256", 7, digest)
    P = merkle.ProofError
    support.raises(P, merkle.leaf_bytes, "h/l", "sha", "sha256", 7, digest)
    support.raises(P, merkle.leaf_bytes, "hl1", "sha", "sha256", 0, digest)
    support.raises(P, merkle.leaf_bytes, "hl1", "sha", "sha256", True, digest)
    support.raises(P, merkle.leaf_bytes, "hl1", "sha", "sha256", 7, digest[:31])
    support.raises(P, merkle.parse_leaf, leaf[:-1])
    support.raises(P, merkle.parse_leaf, leaf + b"\x00")
    support.raises(P, merkle.parse_leaf, b"GWLF\x02" + leaf[5:])
    support.raises(P, merkle.parse_leaf, leaf[:5] + b"\x09" + leaf[6:])
    # the leaf of a list file: names from the manifest, the digest of its signed bytes
    m = {"source": "hl1", "list": "sha", "signal": "sha256", "version": 7}
    assert merkle.parse_leaf(merkle.leaf_of_list(m, b"signed"))[:4] == ("hl1", "sha", "sha256", 7)
    assert merkle.leaf_of_list(m, b"signed") != merkle.leaf_of_list(m, b"signed2")
