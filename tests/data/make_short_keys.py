"""Write tests/data/short_keys.json: short-key vectors for every signal, as the hub indexes them.

The hub's ``EntryIndex`` (CPython) computes the keys; tests/confirm/test_short_keys.py checks that
it still does, and tests/core/test_short_keys.py checks that the device core computes the very same
keys under CPython and MicroPython. The hashes are digests of fixed benign byte strings.

    python tests/data/make_short_keys.py
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from agent.confirm.wire import EntryIndex  # noqa: E402


def vectors():
    out = []
    for signal, fn in (("sha256", hashlib.sha256), ("sha1", hashlib.sha1), ("md5", hashlib.md5)):
        for i in range(3):
            out.append({"signal": signal, "lsh": None, "hash": fn(b"gatewatch-vector-%d" % i).hexdigest()})
    for key_bits in (16, 5, 64):
        for bands in (7, 8):
            lsh = {"bands": bands, "flip_bits": 6, "depth": 2, "threshold": 31, "key_bits": key_bits}
            for i in range(2):
                h = hashlib.sha256(b"gatewatch-pdq-vector-%d-%d" % (bands, i)).hexdigest()
                out.append({"signal": "pdq", "lsh": lsh, "hash": h})
    for key_bits in (16, 64):
        lsh = {"bands": 4, "flip_bits": 8, "depth": 2, "threshold": 28, "key_bits": key_bits}
        for i in range(2):
            h = hashlib.md5(b"gatewatch-neural-vector-%d" % i).hexdigest()  # any 16 bytes stand in for a code
            out.append({"signal": "neural", "lsh": lsh, "hash": h})
    for v in out:
        idx = EntryIndex({"source": "v", "list": "v", "signal": v["signal"], "version": 1, "lsh": v["lsh"],
                          "entries": [{"id": "x", "hash": v["hash"]}]})
        v["keys"] = idx.short_keys_of(bytes.fromhex(v["hash"]))
    return out


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "short_keys.json")
    with open(path, "w") as f:
        json.dump(vectors(), f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", path)
