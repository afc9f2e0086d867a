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

    python bench/bench_proxy.py --hostile            # lockout and memory figures, no curl needed

--hostile measures, in-process against a loopback origin: how long a fresh client waits for its
answer while 300 idle connections come from one address (max_connections 256), and while 50 idle or
50 half-sent heads come from 10 addresses (max_connections 40); and the peak Python heap (tracemalloc)
while four clients fetch a 15 MB image at once, against max_held_bytes.
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


def hostile() -> int:
    """Lockout and memory figures (see the module docstring)."""
    import hashlib
    import threading
    import time
    import tracemalloc

    from agent.intake.proxy.server import ProxyLimits, ProxyServer
    from tests.intake.icap.support import JPEG_HEAD, LoopThread, MarkerInspector
    from tests.intake.proxy.origins import ScriptedOrigin
    from tests.intake.proxy.test_pressure import fetch_hash, open_many, served_within

    big = JPEG_HEAD + bytes(range(256)) * (15 * 4096)
    origin = ScriptedOrigin({"/ok": lambda h, b: (200, [("Content-Type", "text/plain")], b"fine"),
                             "/big.jpg": lambda h, b: (200, [("Content-Type", "image/jpeg")], big)})
    try:
        for label, limits, sources, each, first in (
                ("300 idle connections from one address, max_connections 256",
                 ProxyLimits(max_connections=256), ["127.0.0.1"], 300, b""),
                ("50 idle connections from 10 addresses, max_connections 40",
                 ProxyLimits(max_connections=40, max_connections_per_client=0),
                 ["127.0.0.%d" % i for i in range(2, 12)], 5, b""),
                ("50 half-sent heads from 10 addresses, max_connections 40",
                 ProxyLimits(max_connections=40, max_connections_per_client=0),
                 ["127.0.0.%d" % i for i in range(2, 12)], 5, b"GET / HTTP/1.1\r\nX: ")):
            lt = LoopThread(ProxyServer(MarkerInspector(), limits=limits, allow_loopback_upstream=True))
            socks = open_many(lt.port, sources, each, first)
            time.sleep(0.3)
            took = served_within(lt.port, origin, "127.0.0.99", 65)
            print("%s: a fresh client served after %s; gauges %s" % (
                label, "%.2f s" % took if took is not None else "never (65 s)",
                {k: v for k, v in lt.server.gauges().items() if k in ("connections", "idle", "clients")}))
            for s in socks:
                s.close()
            lt.stop()
        budget = 64 << 20
        lt = LoopThread(ProxyServer(MarkerInspector(), limits=ProxyLimits(max_held_bytes=budget),
                                    allow_loopback_upstream=True))
        out = {}
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        threads = [threading.Thread(target=fetch_hash, args=(lt.port, origin.url("/big.jpg"), out, i)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        ok = all(out[i] == (200, hashlib.sha256(big).hexdigest()) for i in range(4))
        print("four concurrent 15 MB images, max_held_bytes 64 MB: heap peak %.1f MB (%.2fx the budget), "
              "buffered peak %.1f MB, scanned %d, over_budget %d, all delivered intact: %s"
              % (peak / 2 ** 20, peak / budget, lt.server.held_peak / 2 ** 20, lt.server.stats["scanned"],
                 lt.server.stats["over_budget"], ok))
        lt.stop()
    finally:
        origin.stop()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--hostile", action="store_true", help="lockout and memory figures instead")
    args = ap.parse_args(argv)
    if args.hostile:
        return hostile()
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
