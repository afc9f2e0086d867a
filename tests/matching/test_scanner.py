"""agent.matching.scanner: a list that fails a lookup is counted and logged, and the others still answer."""

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.hashing.imaging import digests
from agent.hashing.samples import encode, generate_image
from agent.lists.assemble import assemble, lsh_params
from agent.lists.trust import TrustStore, key_id
from agent.lists.verify import verify_bytes
from agent.matching.scanner import Scanner

IMG = encode(generate_image(99, (128, 96)), "PNG")


def _list(key, trust, name, signal, h):
    data = assemble(source="s", name=name, signal=signal, version=1, hashes=[h], sign=key.sign,
                    key_id=key_id(key.public_key()), created=0, expires=4102444800,
                    lsh=lsh_params(signal, {"min_quality": 0}))
    return verify_bytes(data, trust, now=1)


class Exploding:
    def __contains__(self, key):
        raise KeyError("boom")


def test_one_broken_list_does_not_hide_another_lists_hit(caplog):
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("s", key.public_key())
    from agent.hashing.imaging import hash_image
    exact = _list(key, trust, "exact", "sha256", digests(IMG)[0])
    broken = _list(key, trust, "broken", "sha256", digests(IMG)[0])
    broken_pdq = _list(key, trust, "pdq", "pdq", hash_image(IMG, fast=False).pdq)
    broken.filter = Exploding()
    broken_pdq.lsh = {}  # a lookup that raises KeyError, as a pdq list without its lsh once did
    scanner = Scanner([broken, broken_pdq, exact])
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            result = scanner.scan_bytes(IMG)
            assert result.verdict == "match" and [h.list.ident for h in result.hits] == ["s/exact"]
    assert scanner.faults == {"s/broken": 3, "s/pdq": 3}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all("other lists still answer" in m for m in logged)  # once per list


def test_fingerprint_follows_the_lists_in_force():
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("s", key.public_key())
    a = _list(key, trust, "a", "sha256", b"\x01" * 32)
    scanner = Scanner([])
    empty = scanner.fingerprint()
    scanner.swap([a])
    assert scanner.fingerprint() != empty and scanner.fingerprint() == Scanner([a]).fingerprint()


def _pdq_list(key, trust, entries, filter_type, min_bands):
    data = assemble(source="s", name="pdq", signal="pdq", version=1, hashes=entries, sign=key.sign,
                    key_id=key_id(key.public_key()), created=0, expires=4102444800, filter_type=filter_type,
                    lsh=lsh_params("pdq", {"min_quality": 0, "min_bands": min_bands}))
    return verify_bytes(data, trust, now=1)


def _keep_bands(h, keep, bands=7):
    """``h`` with every bit of the bands not in ``keep`` flipped: those bands can no longer hit, even
    with two of their bits probed."""
    x = int.from_bytes(h, "big")
    for j in range(bands):
        if j not in keep:
            for i in range(j, 256, bands):
                x ^= 1 << i
    return x.to_bytes(32, "big")


def test_min_bands_asks_that_many_bands_of_one_query_to_agree():
    from agent.core.fuse import Fuse16
    from agent.hashing.imaging import hash_image

    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("s", key.public_key())
    h = hash_image(IMG, fast=False).pdq
    one, two = _keep_bands(h, {3}), _keep_bands(h, {1, 5})
    for filter_type in ("bloom", "fuse16"):
        lone = _pdq_list(key, trust, [one], filter_type, 1)
        assert isinstance(lone.filter, Fuse16) == (filter_type == "fuse16")
        hit = Scanner([lone]).scan_bytes(IMG)
        assert hit.verdict == "candidate" and {p[0] for p in hit.hits[0].probes} == {3}
        assert Scanner([_pdq_list(key, trust, [one], filter_type, 2)]).scan_bytes(IMG).verdict == "clean"
        pair = Scanner([_pdq_list(key, trust, [two], filter_type, 2)]).scan_bytes(IMG)
        assert pair.verdict == "candidate" and {p[0] for p in pair.hits[0].probes} == {1, 5}
        # two lone bands of two different entries agree as well: the rule counts bands, not entries
        both = Scanner([_pdq_list(key, trust, [one, _keep_bands(h, {6})], filter_type, 2)]).scan_bytes(IMG)
        assert both.verdict == "candidate"
        assert Scanner([_pdq_list(key, trust, [one, two], filter_type, 3)]).scan_bytes(IMG).verdict == "candidate"
        assert Scanner([_pdq_list(key, trust, [two], filter_type, 3)]).scan_bytes(IMG).verdict == "clean"
