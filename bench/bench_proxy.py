"""Benchmark: images through gatewatch's built-in proxy against fetching them directly.

    python bench/bench_proxy.py                      # 400 fetches per setup, 8 in parallel
    python bench/bench_proxy.py --markdown

Same origin, images and client as bench/bench_icap.py (benign generated 1024x768 JPEGs from a
python http.server on 127.0.0.1, curl -Z as the client). Setups:
  direct                       curl -> origin (the baseline: "added" is measured against it)
  proxy (no scan)              ProxyServer with an inspector that allows without hashing: the
                               cost of the Python proxy alone (buffering each image, re-sending it)
  proxy sha256                 python -m agent.intake.proxy with a signed sha256 demo list
  proxy sha256+pdq             ... plus a PDQ list (decode + perceptual hash per image)
The 2 cores are shared with other work: figures are noisy (+-30%); compare within one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_icap import NULL_PROXY, ORIGIN, Child, bench_lists, make_images, measure, print_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed: run tests/setup/install.sh", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gw-bench-proxy-"))
    www = work / "www"
    www.mkdir()
    images = make_images(www, args.images)
    lists_sha, lists_pdq, pub = bench_lists(work)
    names = sorted(images)
    rows = []
    started = []
    try:
        origin = Child(["-c", ORIGIN, str(www)])
        started.append(origin)
        urls = ["http://127.0.0.1:%d/%s" % (origin.port, names[i % len(names)]) for i in range(args.requests)]
        rows.append(measure("direct", urls, args.parallel))
        null = Child(["-c", NULL_PROXY])
        started.append(null)
        rows.append(measure("proxy (no scan)", urls, args.parallel, "http://127.0.0.1:%d" % null.port))
        null.stop()
        for label, lists in (("proxy sha256", lists_sha), ("proxy sha256+pdq", lists_pdq)):
            agent = Child(["-m", "agent.intake.proxy", "--listen", "127.0.0.1:0", "--lists", lists, "--trust", pub,
                           "--reload", "0", "--allow-loopback-upstream"])  # the origin is on 127.0.0.1
            started.append(agent)
            rows.append(measure(label, urls, args.parallel, "http://127.0.0.1:%d" % agent.port))
            agent.stop()
    finally:
        for c in reversed(started):
            c.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("%d fetches of %d distinct 1024x768 JPEGs, %d in parallel" % (args.requests, len(images), args.parallel))
    print_table(rows, "proxy (no scan)", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
