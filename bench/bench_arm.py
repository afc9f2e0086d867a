"""Benchmark: hashing and lookups natively and on emulated ARM boards; the agent's memory.

    python bench/bench_arm.py                  # native + arm64 + armhf (qemu-user, needs root)
    python bench/bench_arm.py --arch native    # one platform only
    python bench/bench_arm.py --rss            # also: RSS with a 1M-entry exact + 100k-entry PDQ list
    python bench/bench_arm.py --markdown       # print the table for docs/benchmarks.md

Per platform it times, in one process on that platform: the full image pipeline (decode, SHA-256,
SHA-1, MD5, PDQ) on benign generated 1024x768 JPEGs; single Bloom lookups through the portable core
(``key in bloom``, what a MicroPython device does); numpy batch lookups (``bloom_batch``). The
baseline is the native run in the same invocation: every ARM figure is also given as a slowdown
factor against it. qemu-user translates ARM code on this x86 CPU, so its absolute figures are not
a real board's: a Cortex-A53 at 1.2 GHz is usually within 2x of qemu-user here; the ratios show
where emulation (and so, likely, a weak core) hurts most.

RSS: a fresh process that imports the agent, verifies and loads a 1,000,000-entry SHA-256 list and
a 100,000-entry PDQ list (fp 1e-6) and scans one image; VmRSS and VmHWM are read from /proc. The
baseline is the same process with no list loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_IMAGES = 6
FILTER_ENTRIES = 200_000
SINGLE_LOOKUPS = 20_000
BATCH_KEYS = 200_000


# ------------------------------------------------------------------ inner: runs on each platform
def _images(folder: Path):
    return [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]


def inner(share: Path) -> dict:
    """Time hashing and lookups on this interpreter; return figures as a dict."""
    import platform

    import numpy as np

    from agent import bloom_batch
    from agent.core.bloom import Bloom, optimal_parameters
    from agent.imaging import hash_image, digests

    out = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__}
    blobs = _images(share)
    assert blobs, "no images in %s" % share
    hash_image(blobs[0])  # warm-up: imports, first-call costs
    times = []
    for b in blobs:
        t = time.perf_counter()
        digests(b)
        hash_image(b)
        times.append(time.perf_counter() - t)
    out["image_ms"] = statistics.median(times) * 1000

    rng = np.random.default_rng(1)
    m, k = optimal_parameters(FILTER_ENTRIES, 1e-6)
    bloom = Bloom(m, k, bytes(range(16)))
    keys = rng.integers(0, 256, size=(FILTER_ENTRIES, 16), dtype=np.uint8)
    bloom_batch.add_many(bloom, keys)
    probes = rng.integers(0, 256, size=(BATCH_KEYS, 16), dtype=np.uint8)
    singles = [bytes(probes[i]) for i in range(SINGLE_LOOKUPS // 2)] + \
              [bytes(keys[i]) for i in range(SINGLE_LOOKUPS // 2)]
    t = time.perf_counter()
    hit = sum(1 for s in singles if s in bloom)
    out["single_lookup_us"] = (time.perf_counter() - t) / len(singles) * 1e6
    assert hit >= SINGLE_LOOKUPS // 2
    bloom_batch.contains_many(bloom, probes[:1000])
    t = time.perf_counter()
    bloom_batch.contains_many(bloom, probes)
    out["batch_keys_per_s"] = BATCH_KEYS / (time.perf_counter() - t)
    return out


# ------------------------------------------------------------------ RSS: native, separate process
RSS_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from agent import samples
from agent.lists import TrustStore, load_list_file, parse_public_key
from agent.scanner import Scanner
lists = json.loads(sys.argv[2])
trust = TrustStore()
if lists:
    pub, src = parse_public_key(open(sys.argv[3]).read(), "bench key")
    trust.add(src, pub)
scanner = Scanner([load_list_file(p, trust) for p in lists])
r = scanner.scan_bytes(samples.encode(samples.generate_image(5, size=(1024, 768)), "JPEG"))
status = open("/proc/self/status").read()
def kb(name):
    return int([l for l in status.splitlines() if l.startswith(name + ":")][0].split()[1])
print(json.dumps({"rss_kb": kb("VmRSS"), "hwm_kb": kb("VmHWM"), "verdict": r.verdict,
                  "filter_bytes": sum(l.manifest["content_length"] for l in scanner.lists)}))
"""


def build_rss_lists(folder: Path):
    """A 1M-entry SHA-256 list and a 100k-entry PDQ list, signed with a throwaway key."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.lists import Entry, build_list, public_key_line

    key = Ed25519PrivateKey.generate()
    (folder / "bench.pub").write_text(public_key_line(key.public_key(), "bench"))
    rng = np.random.default_rng(7)
    exact = rng.integers(0, 256, size=(1_000_000, 32), dtype=np.uint8)
    pdq = rng.integers(0, 256, size=(100_000, 32), dtype=np.uint8)
    paths = []
    for name, signal, arr in (("exact", "sha256", exact), ("pdq", "pdq", pdq)):
        entries = [Entry("e%d" % i, bytes(arr[i])) for i in range(len(arr))]
        dev, _, _ = build_list(source="bench", name=name, signal=signal, entries=entries, key=key,
                               out_dir=str(folder / name), fp_rate=1e-6, expires_days=1)
        paths.append(dev)
    return paths, folder / "bench.pub"


def measure_rss() -> dict:
    with tempfile.TemporaryDirectory(prefix="gw-bench-rss-") as d:
        t = time.perf_counter()
        paths, pub = build_rss_lists(Path(d))
        build_s = time.perf_counter() - t
        res = {}
        for label, lists in (("baseline", []), ("loaded", paths)):
            p = subprocess.run([sys.executable, "-c", RSS_CHILD, str(REPO), json.dumps(lists), str(pub)],
                               capture_output=True, text=True, check=True)
            res[label] = json.loads(p.stdout)
        res["build_s"] = build_s
        return res


# ------------------------------------------------------------------ orchestration
def make_share() -> Path:
    from agent import samples

    d = Path(tempfile.mkdtemp(prefix="gw-bench-arm-"))
    for seed in range(N_IMAGES):
        (d / ("img%02d.jpg" % seed)).write_bytes(
            samples.encode(samples.generate_image(100 + seed, size=(1024, 768)), "JPEG", 85))
    return d


def run_on(arch: str, share: Path) -> dict:
    if arch == "native":
        p = subprocess.run([sys.executable, __file__, "--inner", str(share)], capture_output=True, text=True)
    else:
        env = dict(os.environ, GW_SHARE=str(share))
        p = subprocess.run([str(REPO / "firmware" / "qemu" / "run-user.sh"), arch, "python3",
                            "bench/bench_arm.py", "--inner", "/opt/share"], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit("bench on %s failed:\n%s" % (arch, p.stderr[-3000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    base = results["native"]
    lines = ["| platform | image: decode + 3 digests + PDQ (ms, median) | single lookup, core (us) "
             "| batch lookup, numpy (keys/s) | slowdown vs native (image / single / batch) |",
             "|---|---|---|---|---|"]
    for arch, r in results.items():
        lines.append("| %s (%s, Python %s, numpy %s) | %.1f | %.2f | %.3g | %.1fx / %.1fx / %.1fx |" % (
            arch, r["machine"], r["python"], r["numpy"], r["image_ms"], r["single_lookup_us"],
            r["batch_keys_per_s"], r["image_ms"] / base["image_ms"],
            r["single_lookup_us"] / base["single_lookup_us"],
            base["batch_keys_per_s"] / r["batch_keys_per_s"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("all", "native", "arm64", "armhf"), default="all")
    ap.add_argument("--rss", action="store_true", help="also measure the agent's RSS with big lists")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--inner", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(Path(args.inner))))
        return 0
    arches = ["native", "arm64", "armhf"] if args.arch == "all" else ["native", args.arch] \
        if args.arch != "native" else ["native"]
    share = make_share()
    results = {}
    for arch in arches:
        t = time.perf_counter()
        results[arch] = run_on(arch, share)
        print("%s done in %.0f s: %s" % (arch, time.perf_counter() - t, json.dumps(results[arch])), file=sys.stderr)
    print(table(results))
    if args.rss:
        rss = measure_rss()
        b, l = rss["baseline"], rss["loaded"]
        print()
        print("| process | VmRSS (MB) | VmHWM peak (MB) | filters (MB) |")
        print("|---|---|---|---|")
        print("| agent, no list (baseline) | %.1f | %.1f | 0 |" % (b["rss_kb"] / 1024, b["hwm_kb"] / 1024))
        print("| agent, 1M SHA-256 + 100k PDQ lists, one scan | %.1f | %.1f | %.1f |" % (
            l["rss_kb"] / 1024, l["hwm_kb"] / 1024, l["filter_bytes"] / 2 ** 20))
        print("\nRSS with lists / baseline: %.2fx; goal <= 64 MB: %s" % (
            l["rss_kb"] / b["rss_kb"], "met" if l["hwm_kb"] <= 64 * 1024 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
