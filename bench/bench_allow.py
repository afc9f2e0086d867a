"""Allow lists: how far the same benign image's hashes move (the default radius), and what the allow
check costs per hit.

    python bench/bench_allow.py [--images 20] [--rounds 200]

1. Distances: for generated and scikit-image sample pictures, the PDQ distance between the hub's
   reference hash of the bytes (``hash_image(fast=False)``, as `lists build` hashes) and the device's
   fast decode of the same bytes and of common re-encodes; the neural distances of re-encodes (when
   a TFLite runtime is installed). The default radius (PDQ 8, neural 4) should cover the first.
2. Cost: ``Policy.decide`` of a confirmed PDQ hit with allow lists of 0 (the baseline, same run),
   100 and 10,000 PDQ entries (none matching: the worst case, every entry compared), as a ratio to
   the baseline and to scanning the image itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.allow import AllowLists  # noqa: E402
from agent.confirm.wire import Entry, EntryIndex  # noqa: E402
from agent.core.lsh import hamming  # noqa: E402
from agent.hashing.imaging import hash_image  # noqa: E402
from agent.hashing.samples import encode, generate_image, sample_images  # noqa: E402
from agent.lists.verify import load_list_file  # noqa: E402
from agent.matching.scanner import Scanner  # noqa: E402
from agent.policy import Policy, PolicySettings  # noqa: E402
from tools.allow import build_allow_list  # noqa: E402
from tools.build import build_list, generate_keys, load_private_key  # noqa: E402


def _spread(values):
    v = sorted(values)
    return "median %2d  p90 %2d  max %2d  (n=%d)" % (v[len(v) // 2], v[int(len(v) * 0.9)], v[-1], len(v))


def distances(n_images: int) -> None:
    pictures = [img for _name, img in sample_images()][: n_images // 2]
    pictures += [generate_image(9000 + i, (640, 480)) for i in range(n_images - len(pictures))]
    edits = {
        "same bytes": lambda img: encode(img, "JPEG", 90),
        "JPEG q70": lambda img: encode(img, "JPEG", 70),
        "JPEG q50": lambda img: encode(img, "JPEG", 50),
        "PNG": lambda img: encode(img, "PNG"),
        "half size": lambda img: encode(img.resize((img.width // 2, img.height // 2)), "JPEG", 85),
    }
    try:
        from agent.hashing import neural
        hasher = neural.get_hasher()
    except Exception as exc:  # no runtime: PDQ only
        print("neural: skipped (%s)" % exc)
        hasher = None
    pdq = {k: [] for k in edits}
    nn = {k: [] for k in edits}
    for img in pictures:
        ref = encode(img, "JPEG", 90)
        ref_pdq = hash_image(ref, fast=False).pdq
        ref_nn = hash_image(ref, fast=True, neural=hasher).neural if hasher else None
        for name, edit in edits.items():
            h = hash_image(edit(img), fast=True, neural=hasher)
            if ref_pdq is not None and h.pdq is not None:
                pdq[name].append(hamming(ref_pdq, h.pdq))
            if ref_nn is not None and h.neural is not None:
                nn[name].append(hamming(ref_nn, h.neural))
    print("PDQ, hub reference hash of the JPEG q90 bytes vs the device's fast decode of:")
    for name in edits:
        print("  %-11s %s" % (name, _spread(pdq[name])))
    if hasher:
        print("neural (device pipeline on both sides), the JPEG q90 bytes vs:")
        for name in edits:
            if name != "same bytes":
                print("  %-11s %s" % (name, _spread(nn[name])))


def cost(rounds: int) -> None:
    import random

    rng = random.Random(5)
    folder = tempfile.mkdtemp(prefix="bench-allow-")
    priv, pub = generate_keys(os.path.join(folder, "keys"), "hl1", "hl1")
    key = load_private_key(priv)
    image = encode(generate_image(4711, (640, 480)), "JPEG", 90)
    out = os.path.join(folder, "lists")
    path, _hub, _m = build_list(source="hl1", name="pdq", signal="pdq", key=key, out_dir=out,
                                entries=[Entry("k0", hash_image(image, fast=False).pdq)])
    from agent.lists.trust import TrustStore
    trust = TrustStore.from_specs([pub])
    hub = EntryIndex.load_dir(out)
    times = {}
    scan_s = None
    for n in (0, 100, 10000):
        lists = [load_list_file(path, trust)]
        if n:
            inp = os.path.join(folder, "allow-%d.txt" % n)
            with open(inp, "w") as f:
                for _ in range(n):
                    f.write("pdq,%064x,8\n" % rng.getrandbits(256))
            lists.append(load_list_file(build_allow_list(inp, os.path.join(folder, "allow-%d" % n), "hl1", priv), trust))
        scanner = Scanner(lists)
        policy = Policy(PolicySettings(), lambda r: hub, scanner.confirm, lambda r, u: None,
                        allow=AllowLists(lambda: scanner.lists))
        t = time.perf_counter()
        result = scanner.scan_bytes(image)
        for _ in range(5):
            result = scanner.scan_bytes(image)
        scan_s = (time.perf_counter() - t) / 6 if scan_s is None else scan_s
        policy.decide(result)  # warm the index
        t = time.perf_counter()
        for _ in range(rounds):
            d = policy.decide(result)
        times[n] = (time.perf_counter() - t) / rounds
        assert d.action == "block", d
    base = times[0]
    print("Policy.decide of a confirmed PDQ hit (%d rounds); scanning the image itself: %.2f ms" % (rounds, scan_s * 1e3))
    for n, s in times.items():
        print("  allow entries %5d: %.3f ms per hit  x%.2f the baseline  %.1f%% of the scan"
              % (n, s * 1e3, s / base, 100 * s / scan_s))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    distances(args.images)
    cost(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
