"""Regenerate the golden list files (tests/data/golden*.gwl) and their expectations (golden.json).

The golden files pin the portable layout: every platform (x86, ARM under QEMU, MicroPython) must read
them and answer the same lookups. Regenerate only when the format changes on purpose:

    python tests/data/make_golden.py
"""

import hashlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.core.bloom import Bloom  # noqa: E402
from agent.core.lsh import band_keys  # noqa: E402
from agent.confirm.wire import Entry  # noqa: E402
from agent.lists.trust import public_key_line  # noqa: E402
from tools.build import build_list  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CREATED = 1767225600  # 2026-01-01T00:00:00Z
EXPIRES_DAYS = 36500  # golden files must not expire under the tests


def digest(i):
    return hashlib.sha256(b"golden-entry-%d" % i).digest()


def pdq(i):
    return hashlib.sha256(b"golden-pdq-%d" % i).digest()


def main():
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gatewatch golden test key").digest())
    out = {"pubkey": public_key_line(key.public_key(), "golden").strip(), "lists": {}}
    with tempfile.TemporaryDirectory() as d:
        exact, _, m1 = build_list(source="golden", name="exact", signal="sha256",
                                  entries=[Entry("e%d" % i, digest(i)) for i in range(1000)], key=key,
                                  out_dir=d, fp_rate=1e-4, version=1, expires_days=EXPIRES_DAYS, now=CREATED,
                                  salt=hashlib.sha256(b"golden salt exact").digest()[:16])
        perceptual, _, m2 = build_list(source="golden", name="pdq", signal="pdq",
                                       entries=[Entry("p%d" % i, pdq(i)) for i in range(200)], key=key,
                                       out_dir=d, fp_rate=1e-4, version=1, expires_days=EXPIRES_DAYS,
                                       now=CREATED, salt=hashlib.sha256(b"golden salt pdq").digest()[:16])
        for src, dst in ((exact, "golden.gwl"), (perceptual, "golden-pdq.gwl")):
            with open(src, "rb") as f:
                data = f.read()
            with open(os.path.join(HERE, dst), "wb") as f:
                f.write(data)
            out["lists"][dst] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    m = m1["filter"]
    bloom = Bloom(m["m"], m["k"], bytes.fromhex(m["salt"]))
    present = [digest(i)[:16] for i in range(0, 1000, 50)]
    absent = [hashlib.sha256(b"golden-absent-%d" % i).digest()[:16] for i in range(20)]
    out["lists"]["golden.gwl"].update(
        manifest=m1, present=[k.hex() for k in present],
        absent=[k.hex() for k in absent],
        positions={k.hex(): bloom.positions(k) for k in present[:5] + absent[:5]})
    bands = m2["lsh"]["bands"]
    out["lists"]["golden-pdq.gwl"].update(
        manifest=m2,
        present_hashes=[pdq(i).hex() for i in range(0, 200, 20)],
        band_keys={pdq(0).hex(): [k.hex() for k in band_keys(pdq(0), bands)]})
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(HERE, "golden.pub"), "w") as f:
        f.write(out["pubkey"] + "\n")


if __name__ == "__main__":
    main()
