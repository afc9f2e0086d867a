"""Benchmark: the transparency log at 1,000,000 list versions: proof sizes and verify times.

    python bench/bench_translog.py                    # 1M leaves, device and hub figures
    python bench/bench_translog.py -n 100000          # another log size
    python bench/bench_translog.py --micropython      # add the core's verify times under MicroPython
    python bench/bench_translog.py --audit            # add `log verify` of a real 1M log folder (~130 MB on disk)

Leaves are synthetic list versions (50 sources x 20 lists, versions counting up, a random signed-bytes
digest each: no list files). Device side: inclusion and consistency proofs of random leaves and
sizes, their hash counts and message bytes (the JSON a device receives, head included), and the
time to check them: the bare Merkle check (agent.core.merkle) and the device's whole check of a
list version (``LogVerifier.check_list``: JSON, the head's Ed25519 signature, the inclusion path).
Baseline, measured in the same run: verifying one list file's Ed25519 signature (``TrustStore.verify``),
what every device already does for every list version. Hub side: building the tree over all leaves
and making one proof, against hashing every leaf once (the least any tree costs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from agent.core import listfile, merkle  # noqa: E402
from agent.lists import translog as device  # noqa: E402
from agent.lists.trust import TrustStore  # noqa: E402
from tools.translog import MerkleTree  # noqa: E402


def leaves(n: int):
    """``n`` synthetic list-version leaves (deterministic)."""
    out = []
    seed = hashlib.sha256(b"gatewatch-bench-log").digest()
    for i in range(n):
        out.append(merkle.leaf_bytes("hl%d" % (i % 50), "list%d" % (i // 50 % 20), "sha256", i // 1000 + 1,
                                     hashlib.sha256(seed + i.to_bytes(8, "little")).digest()))
    return out


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_call(fn, args, rounds: int = 3) -> float:
    """Median over ``rounds`` of the mean seconds per call of ``fn(*a)`` over ``args``."""
    def run():
        for a in args:
            fn(*a)
    return timed(run, rounds) / len(args)


def signed_head(key, size: int, root: bytes) -> dict:
    doc = {"type": device.HEAD_TYPE, "format": 1, "log": "bench", "size": size, "root": root.hex(),
           "issued": 1_800_000_000, "key_id": "bench"}
    signed = device.encode_signed(doc)
    return device.head_wire(signed, key.sign(device.head_message(signed)))


def baseline_list_signature(key):
    """(seconds per verify of a list file's signature, the trust store): the check every device already makes."""
    from agent.lists.assemble import assemble

    data = assemble(source="hl1", name="sha", signal="sha256", version=1,
                    hashes=[hashlib.sha256(b"%d" % i).digest() for i in range(100)], sign=key.sign,
                    key_id="bench", created=1_800_000_000, expires=1_900_000_000, fp_rate=1e-6, lsh=None,
                    capacity=1000, params=None, model=None)
    lf = listfile.parse(data)
    trust = TrustStore()
    trust.add("hl1", key.public_key())
    trust.add_log("bench", key.public_key(), ["hl%d" % i for i in range(50)])
    return per_call(trust.verify, [(lf,)] * 200), trust


def run(n: int, samples: int) -> dict:
    rnd = random.Random(7)
    t0 = time.perf_counter()
    ls = leaves(n)
    t_leaves = time.perf_counter() - t0
    sha = hashlib.sha256
    t_hash = timed(lambda: [sha(b"\x00" + leaf).digest() for leaf in ls], 1)
    t0 = time.perf_counter()
    tree = MerkleTree.of_leaves(ls)
    t_tree = time.perf_counter() - t0
    root = tree.root()
    key = Ed25519PrivateKey.generate()
    t_sig, trust = baseline_list_signature(key)
    head = signed_head(key, n, root)

    idx = [rnd.randrange(n) for _ in range(samples)]
    t0 = time.perf_counter()
    incl = [tree.inclusion(i, n) for i in idx]
    t_make_incl = (time.perf_counter() - t0) / samples
    lhs = [merkle.leaf_hash(ls[i]) for i in idx]
    t_incl = per_call(merkle.verify_inclusion, [(lhs[k], idx[k], n, incl[k], root) for k in range(samples)])
    proofs = [device.proof_bytes(head, idx[k], incl[k]) for k in range(samples)]

    # a device's check of a list version: the leaf of its manifest and signed bytes, then the proof
    manifests = []
    for i in idx:
        s, name, sig, v, digest = merkle.parse_leaf(ls[i])
        manifests.append(({"source": s, "list": name, "signal": sig, "version": v}, digest))
    # check_list recomputes the leaf from the signed bytes: bench the same arithmetic with the
    # synthetic digest standing for SHA-256(signed bytes) (hashing ~1 kB of manifest is ~1 us more)
    orig = merkle.leaf_of_list
    merkle.leaf_of_list = lambda m, d: merkle.leaf_bytes(m["source"], m["list"], m["signal"], m["version"], d)
    try:
        v = device.LogVerifier(trust)
        checks = [(manifests[k][0], manifests[k][1], proofs[k]) for k in range(samples)]
        assert all(v.check_list(*c).size == n for c in checks)  # every sample really is checked in full
        t_check = per_call(v.check_list, checks)
    finally:
        merkle.leaf_of_list = orig

    # consistency: from a random older size to n, and one step (n - 1000 -> n, a day of new versions)
    olds = [rnd.randrange(1, n) for _ in range(samples)]
    roots = {m: tree.root(m) for m in olds + [n - 1000]}
    cons = [tree.consistency(m, n) for m in olds]
    t_cons = per_call(merkle.verify_consistency, [(olds[k], n, roots[olds[k]], root, cons[k]) for k in range(samples)])
    step = tree.consistency(n - 1000, n)
    step_msg = device.step_bytes(signed_head(key, n - 1000, roots[n - 1000]), head, n - 1000, step)
    lens_i = [len(p) for p in incl]
    lens_c = [len(p) for p in cons]
    return {
        "n": n, "python": sys.version.split()[0], "samples": samples,
        "leaves_s": t_leaves, "leaf_hash_all_s": t_hash, "tree_build_s": t_tree,
        "tree_vs_leaf_hash": t_tree / t_hash, "make_inclusion_us": t_make_incl * 1e6,
        "inclusion_hashes": [min(lens_i), max(lens_i)], "inclusion_raw_bytes": 32 * max(lens_i),
        "proof_message_bytes": [min(len(p) for p in proofs), max(len(p) for p in proofs)],
        "consistency_hashes": [min(lens_c), max(lens_c)], "step_hashes": len(step), "step_message_bytes": len(step_msg),
        "verify_inclusion_us": t_incl * 1e6, "verify_consistency_us": t_cons * 1e6,
        "check_list_us": t_check * 1e6, "baseline_list_signature_us": t_sig * 1e6,
        "check_list_vs_signature": t_check / t_sig, "verify_inclusion_vs_signature": t_incl / t_sig,
        "mp_sample": {"index": idx[0], "size": n, "leaf_hash": lhs[0].hex(), "path": [h.hex() for h in incl[0]],
                      "root": root.hex(), "old": olds[0], "old_root": roots[olds[0]].hex(),
                      "cons": [h.hex() for h in cons[0]]},
    }


MP_CODE = r"""
import json, time
from core import merkle
from binascii import unhexlify as u
s = json.loads('SAMPLE')
lh, path, root = u(s["leaf_hash"]), [u(h) for h in s["path"]], u(s["root"])
cons, old_root = [u(h) for h in s["cons"]], u(s["old_root"])
R = 200
t = time.ticks_us()
for _ in range(R):
    merkle.verify_inclusion(lh, s["index"], s["size"], path, root)
ti = time.ticks_diff(time.ticks_us(), t) / R
t = time.ticks_us()
for _ in range(R):
    merkle.verify_consistency(s["old"], s["size"], old_root, root, cons)
tc = time.ticks_diff(time.ticks_us(), t) / R
t = time.ticks_us()
import hashlib
for _ in range(R * 10):
    hashlib.sha256(b"x" * 65).digest()
th = time.ticks_diff(time.ticks_us(), t) / (R * 10)
print(json.dumps({"verify_inclusion_us": ti, "verify_consistency_us": tc, "sha256_65b_us": th}))
"""


def run_micropython(sample: dict) -> dict:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node missing: run tests/setup/post-micropython.sh")
    code = MP_CODE.replace("SAMPLE", json.dumps(sample))
    p = subprocess.run([node, str(REPO / "firmware" / "micropython" / "run.mjs"), "--exec", code],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit("bench under MicroPython failed:\n%s" % p.stderr[-3000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["node"] = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return out


def run_audit(n: int) -> dict:
    """A real log folder of ``n`` leaves (one head) and the time of `log verify` on it, against reading
    and hashing the leaves file alone."""
    from agent.lists.trust import log_key_line
    from tools.translog import LogStore, audit

    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="gw-bench-log-") as tmp:
        store = LogStore.create(os.path.join(tmp, "log"), "bench", log_key_line(key.public_key(), "bench", ["hl1"]))
        with open(os.path.join(store.folder, "leaves"), "wb") as f:
            f.write(b"".join(leaf.hex().encode() + b"\n" for leaf in leaves(n)))
        t0 = time.perf_counter()
        store._sign(key)  # one head over every leaf, as `log append` signs it
        t_sign = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(store.folder, "leaves"))

        def read_hash():
            with open(os.path.join(store.folder, "leaves"), "rb") as f:
                for line in f:
                    hashlib.sha256(b"\x00" + bytes.fromhex(line.decode().strip())).digest()
        t_base = timed(read_hash, 1)
        t0 = time.perf_counter()
        summary = audit(store.folder)
        t_audit = time.perf_counter() - t0
    assert summary["size"] == n
    return {"leaves_file_bytes": size, "bytes_per_leaf": size / n, "sign_head_s": t_sign,
            "audit_s": t_audit, "read_and_hash_s": t_base, "audit_vs_read_and_hash": t_audit / t_base}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="list versions in the log (default 1,000,000)")
    ap.add_argument("--samples", type=int, default=300, help="proofs made and checked (default 300)")
    ap.add_argument("--micropython", action="store_true", help="also time the core's checks under MicroPython")
    ap.add_argument("--audit", action="store_true", help="also build a real log folder and time `log verify`")
    args = ap.parse_args()
    r = run(args.n, args.samples)
    sample = r.pop("mp_sample")
    if args.micropython:
        r["micropython"] = run_micropython(sample)
    if args.audit:
        r["audit"] = run_audit(args.n)
    print(json.dumps(r, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
