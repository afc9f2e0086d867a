"""The hub's index still gives the short keys of tests/data/short_keys.json (the core checks the same file)."""

from tests.data.make_short_keys import vectors
from tests.paths import DATA


def test_hub_index_gives_the_recorded_short_keys():
    import json
    with open(DATA / "short_keys.json") as f:
        recorded = json.load(f)
    assert vectors() == recorded, "regenerate with: python tests/data/make_short_keys.py"


def test_scanner_sends_the_keys_the_hub_indexes():
    # end to end on CPython: a listed PDQ hash's scan keys are found in the hub's index
    from agent.confirm.wire import Entry
    from agent.hashing.imaging import hash_image
    from agent.hashing.samples import encode, generate_image
    from agent.lists.assemble import assemble, lsh_params
    from agent.lists.trust import TrustStore, key_id
    from agent.lists.verify import verify_bytes
    from agent.matching.scanner import Scanner
    from agent.confirm.wire import EntryIndex
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
    assert hit.keys and all(index.lookup(k) for k in hit.keys)
    assert all(int(k.split(":")[2], 16) < (1 << lsh["key_bits"]) for k in hit.keys)
