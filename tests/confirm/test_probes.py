"""The hub seals its entries under the probes recorded in tests/data/probes.json (the device core is
checked against the same file in tests/core/test_probes.py), and the scanner's probes of a listed image
are among them."""

import json

from agent.confirm.wire import EntryIndex, Entry, entry_probes
from tests.paths import DATA


def test_hub_gives_the_recorded_probes():
    with open(DATA / "probes.json") as f:
        vectors = json.load(f)
    assert len(vectors) >= 20
    for v in vectors:
        got = [[b, x.hex()] for b, x in entry_probes(v["signal"], bytes.fromhex(v["hash"]), v["lsh"])]
        assert got == v["probes"], v


def test_scanner_probes_are_the_ones_the_hub_seals(tmp_path):
    from agent.hashing.imaging import hash_image
    from agent.hashing.samples import encode, generate_image
    from agent.lists.assemble import assemble, lsh_params
    from agent.lists.trust import TrustStore, key_id
    from agent.lists.verify import verify_bytes
    from agent.matching.scanner import Scanner
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    img = encode(generate_image(77, (160, 120)), "PNG")
    h = hash_image(img, fast=False).pdq
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("s", key.public_key())
    lsh = lsh_params("pdq", {"min_quality": 0})
    data = assemble(source="s", name="p", signal="pdq", version=1, hashes=[h], sign=key.sign,
                    key_id=key_id(key.public_key()), created=0, expires=4102444800, lsh=lsh)
    scanner = Scanner([verify_bytes(data, trust, now=1)])
    hit = scanner.scan_bytes(img).hits[0]
    index = EntryIndex({"source": "s", "list": "p", "signal": "pdq", "version": 1, "lsh": lsh,
                        "entries": [Entry("x", h).to_json()]})
    assert hit.probes and all(index.lookup(p) for p in hit.probes)
    assert set(hit.probes) <= set(entry_probes("pdq", h, lsh))
