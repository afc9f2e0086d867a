"""Benchmark: images through Squid with no adaptation, with c-icap's echo service, and with gatewatch.

    python bench/bench_icap.py                       # 400 fetches per setup, 8 in parallel
    python bench/bench_icap.py --requests 1000 --parallel 16 --markdown

Everything runs on 127.0.0.1: an origin (python http.server, own process) serving benign generated
1024x768 JPEGs (about 140 KB each), Squid 5.7 from Debian with `cache deny all` (every fetch goes to
the origin and through adaptation), and curl as the client (`curl -Z`, C, so the load generator
costs little CPU). Per setup it reports images/s over the run and per-image latency p50/p99; "added"
is the p50 over the direct fetch (no proxy) measured in the same run, and each ICAP setup is also
given as a ratio against Squid + c-icap echo (the C baseline).

Setups:
  direct                         curl -> origin
  squid                          curl -> Squid -> origin
  squid + c-icap echo            Squid RESPMOD to c-icap's srv_echo (streams the body back)
  squid + gatewatch (no scan)    gatewatch's ICAP server with an inspector that allows without hashing:
                                 the protocol overhead alone, comparable with echo
  squid + gatewatch sha256       python -m agent.intake.icap with a signed sha256 demo list (digests per image)
  squid + gatewatch sha256+pdq   ... plus a PDQ list (decode + perceptual hash per image)

gatewatch runs with its default --early-head stall: Squid 5.7 (bug 5352) stops sending every body
over 64 KB until the service answers; gatewatch sees the pause at Squid's 65535-byte buffer size and
answers after 5 ms (see agent/intake/icap/server.py), so each 1024x768 JPEG pays about that.
The machine's 2 cores are shared with other work: figures are noisy (+-30%); ratios within one run
are the meaningful part.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.intake.icap.realservers import CIcap, Squid, demo_lists, hub  # noqa: E402
from tests.waiting import stop_process  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           http_proxy="", HTTP_PROXY="", no_proxy="")

NULL_ICAP = """
import asyncio, sys
from agent.intake.icap.protocol import IcapLimits
from agent.intake.icap.server import IcapServer
from agent.intake import Decision

class AllowAll:
    def inspect(self, body, content_type=None, url=None):
        return Decision("allow", "clean", None, url)

async def main():
    server = IcapServer(AllowAll(), limits=IcapLimits(early_head="stall", stall_timeout=float(sys.argv[1])))
    await server.start("127.0.0.1", 0)
    print("listening on 127.0.0.1:%d" % server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

NULL_PROXY = """
import asyncio
from agent.intake import Decision
from agent.intake.proxy.server import ProxyServer

class AllowAll:
    def inspect(self, body, content_type=None, url=None):
        return Decision("allow", "clean", None, url)

async def main():
    server = ProxyServer(AllowAll(), allow_loopback_upstream=True)  # the bench origin is on loopback
    await server.start("127.0.0.1", 0)
    print("listening on 127.0.0.1:%d" % server.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

ORIGIN = """
import sys, time
from tests.intake.icap.realservers import Origin
o = Origin(sys.argv[1])
print("listening on 127.0.0.1:%d" % o.port, flush=True)
while True:
    time.sleep(3600)
"""


class Child:
    """A Python child process that prints 'listening on HOST:PORT' first."""

    def __init__(self, args):
        self.proc = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=ENV, cwd=str(REPO))
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError("child %s did not start: %r" % (args[:3], line))
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self):
        stop_process(self.proc, 10)


def bench_lists(work: Path):
    """A SHA-256 list folder and a SHA-256 + PDQ one, of other generated images: every fetched image
    is scanned and found clean. Returns (sha folder, sha+pdq folder, public key)."""
    from agent.hashing.samples import encode, generate_image

    listed = {"listed%d.jpg" % i: encode(generate_image(90_000 + i), "JPEG") for i in range(4)}
    lists_sha, pub = demo_lists(str(work / "sha"), listed)
    lists_pdq = str(work / "pdq-lists")
    shutil.copytree(lists_sha, lists_pdq)
    hub("lists", "build", "--source", "demo", "--list", "e2e-pdq", "--signal", "pdq", "--input",
        str(work / "sha" / "listed"), "--key", str(work / "sha" / "keys" / "demo.key"), "--out", lists_pdq,
        "--no-progress")
    return lists_sha, lists_pdq, pub


def make_images(www: Path, count: int, size=(1024, 768)):
    """Benign generated JPEGs (1024x768 by default); returns {name: bytes}."""
    from agent.hashing.samples import encode, generate_image

    images = {}
    for i in range(count):
        name = "img%03d.jpg" % i
        images[name] = encode(generate_image(50_000 + i, size), "JPEG")
        (www / name).write_bytes(images[name])
    return images


def fetch_run(urls, parallel: int, proxy=None):
    """Fetch ``urls`` with one curl -Z; returns (wall seconds, [per-transfer seconds], [http codes])."""
    with tempfile.NamedTemporaryFile("w", suffix=".curl", delete=False) as cfg:
        for u in urls:
            cfg.write('url = "%s"\noutput = "/dev/null"\n' % u)
        path = cfg.name
    cmd = ["curl", "-s", "-Z", "--parallel-max", str(parallel), "--parallel-immediate", "-K", path,
           "-w", "%{http_code} %{time_total}\n"]
    cmd += ["-x", proxy] if proxy else ["--noproxy", "*"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, env=ENV, timeout=900).stdout.decode()
    wall = time.perf_counter() - t0
    os.unlink(path)
    codes, times = [], []
    for line in out.split("\n"):
        if line.strip():
            c, t = line.split()
            codes.append(int(c))
            times.append(float(t))
    return wall, times, codes


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure(label, urls, parallel, proxy=None, warm=20):
    fetch_run(urls[:warm], parallel, proxy)
    wall, times, codes = fetch_run(urls, parallel, proxy)
    ok = sum(1 for c in codes if c == 200)
    return {"setup": label, "n": len(times), "ok": ok, "rate": len(times) / wall,
            "p50": pct(times, 0.5) * 1000, "p99": pct(times, 0.99) * 1000}


def print_table(rows, baseline_label, markdown):
    base = next(r for r in rows if r["setup"] == "direct")
    ref = next((r for r in rows if r["setup"] == baseline_label), None)
    ref_added = (ref["p50"] - base["p50"]) if ref else None
    if markdown:
        print("| setup | images/s | p50 ms | p99 ms | added p50 ms | added vs %s | ok |" % baseline_label)
        print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        added = r["p50"] - base["p50"]
        ratio = ("%.2fx" % (added / ref_added)) if ref_added and r is not base and r["setup"] != "squid" else ""
        if markdown:
            print("| %s | %.0f | %.1f | %.1f | %.1f | %s | %d/%d |" % (r["setup"], r["rate"], r["p50"], r["p99"],
                                                                   added, ratio, r["ok"], r["n"]))
        else:
            print("%-32s %7.0f img/s  p50 %7.1f ms  p99 %7.1f ms  added %6.1f ms %8s  ok %d/%d"
                  % (r["setup"], r["rate"], r["p50"], r["p99"], added, ratio, r["ok"], r["n"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--skip-pdq", action="store_true", help="leave out the sha256+pdq setup")
    ap.add_argument("--stall-timeout", type=float, default=0.1)
    ap.add_argument("--size", default="1024x768", help="image size WxH (512x384 stays under Squid's "
                    "64 KB buffer, which isolates the protocol cost from Squid bug 5352)")
    args = ap.parse_args(argv)
    for tool in ("squid", "c-icap", "curl"):
        if not (shutil.which(tool) or os.path.exists("/usr/sbin/" + tool)):
            print("%s is not installed: run tests/setup/install.sh" % tool, file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="gw-bench-icap-"))
    www = work / "www"
    www.mkdir()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    images = make_images(www, args.images, size)
    lists_sha, lists_pdq, pub = bench_lists(work)
    names = sorted(images)
    started = []
    rows = []
    try:
        origin = Child(["-c", ORIGIN, str(www)])
        started.append(origin)
        urls = ["http://127.0.0.1:%d/%s" % (origin.port, names[i % len(names)]) for i in range(args.requests)]

        def through_squid(label, icap_port=None, icap_path="/respmod"):
            squid = Squid(str(work), icap_port=icap_port, icap_path=icap_path)
            try:
                rows.append(measure(label, urls, args.parallel, squid.proxy))
            finally:
                squid.stop()

        rows.append(measure("direct", urls, args.parallel))
        through_squid("squid")
        cicap = CIcap(str(work))
        started.append(cicap)
        through_squid("squid + c-icap echo", cicap.port, "/echo")
        null = Child(["-c", NULL_ICAP, str(args.stall_timeout)])
        started.append(null)
        through_squid("squid + gatewatch (no scan)", null.port)
        setups = [("squid + gatewatch sha256", lists_sha)]
        if not args.skip_pdq:
            setups.append(("squid + gatewatch sha256+pdq", lists_pdq))
        for label, lists in setups:
            agent = Child(["-m", "agent.intake.icap", "--listen", "127.0.0.1:0", "--lists", lists, "--trust", pub,
                           "--reload", "0", "--stall-timeout", str(args.stall_timeout)])
            started.append(agent)
            through_squid(label, agent.port)
            agent.stop()
    finally:
        for c in reversed(started):
            c.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("%d fetches of %d distinct %s JPEGs (mean %.0f KB), %d in parallel"
          % (args.requests, len(images), args.size, statistics.mean(len(v) for v in images.values()) / 1024,
             args.parallel))
    print_table(rows, "squid + c-icap echo", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
