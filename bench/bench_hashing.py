"""Hashing throughput: agent.hashing.imaging.hash_image against the naive pipeline, measured in the same run.

Baseline (what one would write first): Pillow full decode to RGB, ``pdqhash.compute`` (Meta's C++ PDQ
via Cython), plus hashlib SHA-256/SHA-1/MD5. Ours: ``hash_image`` (sniff, header limits, decode, the
three digests, PDQ), in its fast (scaled JPEG decode to luma) and full-resolution modes.

Images are generated (agent.hashing.samples), never real material. Run:

    python bench/bench_hashing.py            # 24 JPEGs 1024x768 q90, 5 rounds
    python bench/bench_hashing.py --count 8 --rounds 2 --size 2048x1536

Timings: each image's best of ``--rounds`` interleaved runs, averaged over the images (the machine
is shared; the minimum is the least disturbed figure). Ratios compare against the baseline of the
same run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import struct
import sys
import time
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.hashing import imaging, pdq, samples  # noqa: E402
from agent.core.errors import ImageError  # noqa: E402

try:
    import pdqhash
except ImportError:  # pragma: no cover
    sys.exit("bench_hashing needs pdqhash (pip install -e .[test])")


def baseline(data: bytes):
    """The naive pipeline: full RGB decode + reference PDQ + three digests."""
    hashlib.sha256(data).digest()
    hashlib.sha1(data).digest()
    hashlib.md5(data).digest()
    vec, quality = pdqhash.compute(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.packbits(np.asarray(vec, dtype=np.uint8)).tobytes(), quality


def per_image(pipelines, datas, rounds):
    """Seconds per image for each pipeline: per image, the best of ``rounds`` runs, then the mean.

    Rounds interleave the pipelines so that all of them see the same background load; taking each
    image's best run filters the spikes other processes cause on a shared machine.
    """
    for fn in pipelines.values():
        fn(datas[0])  # warm caches (filter matrices per size, imports)
    best = {name: [float("inf")] * len(datas) for name in pipelines}
    for _ in range(rounds):
        for name, fn in pipelines.items():
            for i, d in enumerate(datas):
                start = time.perf_counter()
                fn(d)
                best[name][i] = min(best[name][i], time.perf_counter() - start)
    return {name: sum(v) / len(v) for name, v in best.items()}


def hash_cold(data: bytes):
    """hash_image with the per-size filter cache emptied first: every image a size not seen before."""
    pdq._axis.cache_clear()
    return imaging.hash_image(data)


_MEMORY_PROBE = r"""
import io, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from PIL import Image
from agent.hashing import imaging
import pdqhash


def hwm_kib():
    # VmHWM belongs to this process's memory map (ru_maxrss would carry the parent's over exec).
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


data = open(sys.argv[2], "rb").read()
before = hwm_kib()
if sys.argv[3] == "baseline":
    pdqhash.compute(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
else:
    imaging.hash_image(data, fast=(sys.argv[3] == "fast"))
print(hwm_kib() - before)
"""


def peak_memory_kib(data: bytes, mode: str) -> int:
    """Peak RSS growth (KiB) of hashing one image in a fresh interpreter, imports excluded (Linux)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
        f.write(data)
        f.flush()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, root, f.name, mode],
                             capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def per_call(fn, arg, n):
    fn(arg)
    start = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - start) / n


def refuse(data):
    try:
        imaging.hash_image(data)
    except ImageError:
        return
    raise AssertionError("expected a refusal")


def png_header_only(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def agreement(datas, **kw):
    dists = []
    for d in datas:
        ref, quality = baseline(d)
        if quality >= 80:
            dists.append(pdq.hamming(imaging.hash_image(d, **kw).pdq, ref))
    return dists


def fmt_dists(d):
    if not d:
        return "n/a"
    return "max %d, median %g, mean %.2f over %d images" % (max(d), statistics.median(d), statistics.mean(d), len(d))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--no-samples", action="store_true", help="skip the scikit-image agreement check")
    args = ap.parse_args(argv)
    w, h = (int(x) for x in args.size.lower().split("x"))

    print("generating %d benign %dx%d JPEGs (q%d)..." % (args.count, w, h, args.quality))
    imgs = [samples.generate_image(1000 + s, (w, h)) for s in range(args.count)]
    jpegs = [samples.encode(im, "JPEG", args.quality) for im in imgs]
    pngs = [samples.encode(im, "PNG") for im in imgs[: max(2, args.count // 4)]]
    print("mean JPEG size %.0f KiB" % (sum(map(len, jpegs)) / len(jpegs) / 1024))

    pipelines = {
        "baseline: PIL RGB + pdqhash + 3 digests": baseline,
        "hash_image fast (default)": imaging.hash_image,
        "hash_image fast + 8 dihedral": lambda d: imaging.hash_image(d, dihedral=True),
        "hash_image fast=False (full resolution)": lambda d: imaging.hash_image(d, fast=False),
        "hash_image fast, cold filter cache": hash_cold,
    }
    times = per_image(pipelines, jpegs, args.rounds)
    t_base = times["baseline: PIL RGB + pdqhash + 3 digests"]

    print()
    print("JPEG %dx%d, per image (best of %d interleaved rounds, averaged over images):" % (w, h, args.rounds))
    print("  %-42s %9s %10s %8s" % ("pipeline", "ms/img", "images/s", "speed-up"))
    for name, t in times.items():
        print("  %-42s %9.2f %10.1f %7.2fx" % (name, t * 1e3, 1.0 / t, t_base / t))

    # Where the time goes, for one image size: the same stages in isolation.
    rgb = np.asarray(Image.open(io.BytesIO(jpegs[0])).convert("RGB"))

    def scaled_y(d):
        im = Image.open(io.BytesIO(d))
        im.draft("L", (imaging.FAST_MIN_SIDE, imaging.FAST_MIN_SIDE))
        return np.asarray(im)

    small = scaled_y(jpegs[0])
    stages = per_image(
        {
            "JPEG decode to RGB, full size (Pillow)": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
            "JPEG decode to Y, scaled (draft)": scaled_y,
            "SHA-256 + SHA-1 + MD5": imaging.digests,
            "PDQ full RGB: pdqhash (C++)": lambda d: pdqhash.compute(rgb),
            "PDQ full RGB: agent.hashing.pdq": lambda d: pdq.pdq_from_rgb(rgb),
            "PDQ scaled Y %dx%d: agent.hashing.pdq" % (small.shape[1], small.shape[0]): lambda d: pdq.pdq_from_luma(small, (h, w)),
        },
        jpegs[:8],
        args.rounds,
    )
    print("stages (one %dx%d image):" % (w, h))
    for name, t in stages.items():
        print("  %-42s %9.2f ms" % (name, t * 1e3))

    ptimes = per_image({"base": baseline, "fast": imaging.hash_image}, pngs, args.rounds)
    print(
        "PNG %dx%d: baseline %.2f ms, hash_image %.2f ms, speed-up %.2fx (PNG inflate dominates both)"
        % (w, h, ptimes["base"] * 1e3, ptimes["fast"] * 1e3, ptimes["base"] / ptimes["fast"])
    )

    print()
    print("PDQ agreement with the reference (Hamming bits, quality >= 80):")
    print("  generated, fast path:  %s" % fmt_dists(agreement(jpegs)))
    print("  generated, full path:  %s" % fmt_dists(agreement(jpegs, fast=False)))
    if not args.no_samples:
        try:
            sample_jpegs = [samples.encode(im, "JPEG", args.quality) for _, im in samples.sample_images()]
        except ImportError:
            sample_jpegs = []
        if sample_jpegs:
            print("  scikit-image samples, fast path: %s" % fmt_dists(agreement(sample_jpegs)))
            print("  scikit-image samples, full path: %s" % fmt_dists(agreement(sample_jpegs, fast=False)))

    print()
    big_img = samples.generate_image(7, (4000, 3000))
    for fmt in ("JPEG", "PNG"):
        big = samples.encode(big_img, fmt, 90)
        print("Peak memory growth hashing one 4000x3000 %s (%d KiB), fresh process each:" % (fmt, len(big) // 1024))
        for mode in ("baseline", "fast", "full"):
            print("  %-10s %8.1f MiB" % (mode, peak_memory_kib(big, mode) / 1024.0))

    print()
    print("Refusals (per call):")
    bomb = png_header_only(40000, 40000)
    trunc = jpegs[0][: len(jpegs[0]) // 2]
    html = b"<!DOCTYPE html><html><body>not found</body></html>"
    for name, data, n in (("40000x40000 PNG header", bomb, 2000), ("HTML page", html, 2000), ("JPEG cut in half", trunc, 50)):
        t = per_call(refuse, data, n)
        print("  %-24s %9.1f us" % (name, t * 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
