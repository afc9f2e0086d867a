"""Write tests/data/probes.json: for every signal, the probes an entry is sealed under at the hub.

The hub's ``agent.confirm.wire.entry_probes`` (CPython) computes them; tests/confirm/test_probes.py
checks that it still does, and tests/core/test_probes.py checks that the device core gives the very
same band values under CPython and MicroPython (the scanner's probes of an image start there). The
hashes are digests of fixed benign byte strings.

    python tests/data/make_probes.py
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from agent.confirm.wire import entry_probes  # noqa: E402


def vectors():
    out = []
    for signal, fn in (("sha256", hashlib.sha256), ("sha1", hashlib.sha1), ("md5", hashlib.md5)):
        for i in range(3):
            out.append({"signal": signal, "lsh": None, "hash": fn(b"gatewatch-vector-%d" % i).hexdigest()})
    for bands in (4, 6, 7, 8):
        lsh = {"bands": bands, "flip_bits": 6, "depth": 2, "threshold": 31}
        for i in range(2):
            h = hashlib.sha256(b"gatewatch-pdq-vector-%d-%d" % (bands, i)).hexdigest()
            out.append({"signal": "pdq", "lsh": lsh, "hash": h})
    for bands in (4, 2):
        lsh = {"bands": bands, "flip_bits": 8, "depth": 2, "threshold": 28}
        for i in range(2):
            h = hashlib.md5(b"gatewatch-neural-vector-%d" % i).hexdigest()  # any 16 bytes stand in for a code
            out.append({"signal": "neural", "lsh": lsh, "hash": h})
    for v in out:
        v["probes"] = [[band, value.hex()] for band, value in entry_probes(v["signal"], bytes.fromhex(v["hash"]),
                                                                           v["lsh"])]
    return out


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes.json")
    with open(path, "w") as f:
        json.dump(vectors(), f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", path)
