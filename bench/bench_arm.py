"""Benchmark: hashing and lookups natively and on emulated ARM boards; the agent's memory.

    python bench/bench_arm.py                  # native + arm64 + armhf (qemu-user, needs root)
    python bench/bench_arm.py --arch native    # one platform only (others: arm64, armhf, micropython)
    python bench/bench_arm.py --rss            # also: RSS with a 1M-entry exact + 100k-entry PDQ list
    python bench/bench_arm.py --markdown       # print the table for docs/benchmarks.md

Per platform it times, in one process on that platform: the full image pipeline (decode, SHA-256,
SHA-1, MD5, PDQ) on benign generated 1024x768 JPEGs; single Bloom lookups through the portable core
(``key in bloom``, what a MicroPython device does); numpy batch lookups (``bloom_batch``); the
neural hash where a TFLite runtime is installed (arm64: the aarch64 ai-edge-litert wheel that
firmware/qemu/litert-site.sh puts in the board; armhf has none): model load, JPEG bytes -> code,
one interpreter invoke. The
baseline is the native run in the same invocation: every ARM figure is also given as a slowdown
factor against it. The MicroPython row times only single core lookups (a 2,000-entry filter: the
port's heap is small, and lookup cost does not depend on the filter size) in the WebAssembly port
under Node, the closest stand-in here for a MicroPython device. qemu-user translates ARM code on this x86 CPU, so its absolute figures are not
a real board's: a Cortex-A53 at 1.2 GHz is usually within 2x of qemu-user here; the ratios show
where emulation (and so, likely, a weak core) hurts most.

RSS: the full agent, `gatewatch run` with the emulated HAL and no broker, started on a folder with
a 1,000,000-entry SHA-256 list and a 100,000-entry PDQ list (fp 1e-6), then asked to scan the
benchmark's 1024x768 JPEGs through its local API; VmRSS and VmHWM come from /proc/PID/status. The
baseline is the same daemon on one-entry lists; a third run adds a 10,000-entry neural list, so the
daemon loads the model and computes codes (the model's and the runtime's memory).
"""

from __future__ import annotations

import argparse
import json
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

    from agent.matching import bloom_batch
    from agent.core.bloom import Bloom, optimal_parameters
    from agent.hashing.imaging import hash_image, digests

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
    out.update(inner_neural(blobs))
    return out


def inner_neural(blobs) -> dict:
    """The neural hash on this platform: runtime, model load, bytes -> code, one invoke; or why not."""
    from agent.core.errors import ConfigError
    from agent.hashing import neural

    t = time.perf_counter()
    try:
        hasher = neural.get_hasher()
    except neural.RuntimeMissing:
        return {"neural": "none (neural lists refused)"}
    except ConfigError as e:
        return {"neural": "unavailable: %s" % str(e)[:80]}
    out = {"neural": hasher.runtime, "neural_load_ms": (time.perf_counter() - t) * 1000}
    neural.neural_hash_bytes(blobs[0])  # warm-up: the interpreter's first invoke prepares its kernels
    times = []
    for b in blobs:
        t = time.perf_counter()
        neural.neural_hash_bytes(b)
        times.append(time.perf_counter() - t)
    out["neural_ms"] = statistics.median(times) * 1000
    from PIL import Image
    import io

    x = neural.preprocess(Image.open(io.BytesIO(blobs[0])), hasher.size, hasher.trim_tolerance, hasher.derotate)
    t = time.perf_counter()
    for _ in range(20):
        hasher._run(x)
    out["neural_invoke_ms"] = (time.perf_counter() - t) / 20 * 1000
    return out


# ------------------------------------------------------------------ MicroPython (WebAssembly port in Node)
MP_LOOKUPS = 4000
MP_CODE = r"""
import hashlib, json, sys, time
from core.bloom import Bloom, optimal_parameters
n = 2000
m, k = optimal_parameters(n, 1e-6)
b = Bloom(m, k, bytes(range(16)))
keys = [hashlib.sha256(b"in-%d" % i).digest()[:16] for i in range(n)]
for key in keys:
    b.add(key)
probes = keys[:LOOKUPS // 2] + [hashlib.sha256(b"out-%d" % i).digest()[:16] for i in range(LOOKUPS // 2)]
t = time.ticks_us()
hits = 0
for key in probes:
    if key in b:
        hits += 1
us = time.ticks_diff(time.ticks_us(), t)
assert hits >= LOOKUPS // 2
print(json.dumps({"machine": "wasm32 (Node %s)" % "NODE", "python": "MicroPython %d.%d.%d" % sys.implementation.version[:3],
                  "numpy": "-", "single_lookup_us": us / len(probes)}))
"""


def run_micropython() -> dict:
    """Single core lookups under the MicroPython WebAssembly port (no numpy, no image path there)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node missing: run tests/setup/post-micropython.sh")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    code = MP_CODE.replace("LOOKUPS", str(MP_LOOKUPS)).replace("NODE", version)
    p = subprocess.run([node, str(REPO / "firmware" / "micropython" / "run.mjs"), "--exec", code],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("bench under MicroPython failed:\n%s" % p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ RSS: the daemon, native
def build_rss_lists(folder: Path):
    """A 1M-entry SHA-256 list and a 100k-entry PDQ list, signed with a throwaway key."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.confirm.wire import Entry
    from agent.lists.trust import public_key_line
    from tools.build import build_list

    key = Ed25519PrivateKey.generate()
    (folder / "bench.pub").write_text(public_key_line(key.public_key(), "bench"))
    rng = np.random.default_rng(7)
    exact = rng.integers(0, 256, size=(1_000_000, 32), dtype=np.uint8)
    pdq = rng.integers(0, 256, size=(100_000, 32), dtype=np.uint8)
    # The baseline gets a one-entry list: the daemon refuses to run without any verified list.
    codes = rng.integers(0, 256, size=(10_000, 16), dtype=np.uint8)
    # "neural": the baseline's one-entry lists plus a 10k-entry neural list, so the daemon loads the
    # model (when a TFLite runtime is installed) and computes a code per scanned image
    for sub, n_exact, n_pdq, n_neural in (("lists", len(exact), len(pdq), 0), ("tiny", 1, 1, 0),
                                          ("neural", 1, 1, len(codes))):
        (folder / sub).mkdir()
        for name, signal, arr, n in (("exact", "sha256", exact, n_exact), ("pdq", "pdq", pdq, n_pdq),
                                     ("neural", "neural", codes, n_neural)):
            if not n:
                continue
            entries = [Entry("e%d" % i, bytes(arr[i])) for i in range(n)]
            dev, _, _ = build_list(source="bench", name=name, signal=signal, entries=entries, key=key,
                                   out_dir=str(folder / ("%s-%s" % (sub, name))), fp_rate=1e-6, expires_days=1)
            os.replace(dev, folder / sub / os.path.basename(dev))
    return folder / "lists", folder / "tiny", folder / "bench.pub"


def _proc_kb(pid: int, field: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _ask(sock_path: str, request: dict) -> dict:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(sock_path)
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def daemon_rss(lists_dir: Path, trust: Path, images: list, work: Path) -> dict:
    """Start `gatewatch run` on a list folder, scan images through its local API, read its memory."""
    state = work / ("state-" + lists_dir.name)
    sock = str(work / ("%s.sock" % lists_dir.name))
    env = dict(os.environ, GATEWATCH_AGENT_HAL="emulated", PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--state-dir", str(state), "--lists",
                          str(lists_dir), "--trust", str(trust), "--socket", sock], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (os.path.exists(sock) and (state / "status.json").exists()):
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("daemon did not start: %s" % p.stderr.read().decode()[-2000:])
            time.sleep(0.2)
        loaded = {"rss_kb": _proc_kb(p.pid, "VmRSS")}
        verdicts = [_ask(sock, {"path": str(img)})["verdict"] for img in images]
        loaded.update(scanned_rss_kb=_proc_kb(p.pid, "VmRSS"), hwm_kb=_proc_kb(p.pid, "VmHWM"),
                      verdicts=verdicts)
        return loaded
    finally:
        p.terminate()
        p.wait(timeout=30)


def measure_rss(share: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="gw-bench-rss-") as d:
        work = Path(d)
        t = time.perf_counter()
        lists_dir, tiny, pub = build_rss_lists(work)
        build_s = time.perf_counter() - t
        images = sorted(share.glob("*.jpg"))
        res = {"baseline": daemon_rss(tiny, pub, images, work), "loaded": daemon_rss(lists_dir, pub, images, work),
               "neural": daemon_rss(work / "neural", pub, images, work)}
        res["filter_bytes"] = sum(os.path.getsize(p) for p in lists_dir.iterdir())
        res["build_s"] = build_s
        return res


# ------------------------------------------------------------------ orchestration
def make_share() -> Path:
    from agent.hashing import samples

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


def neural_table(results: dict) -> str:
    """The neural hash per platform, with its slowdown against native in the same run."""
    base = results["native"]
    lines = ["| platform | TFLite runtime | model load (ms) | JPEG bytes -> neural code (ms, median) "
             "| invoke (ms) | slowdown vs native (code / invoke) |", "|---|---|---|---|---|---|"]
    for arch, r in results.items():
        if arch == "micropython":
            continue
        if "neural_ms" not in r:
            lines.append("| %s (%s) | %s | - | - | - | - |" % (arch, r["machine"], r.get("neural", "-")))
            continue
        ratio = ("%.1fx / %.1fx" % (r["neural_ms"] / base["neural_ms"], r["neural_invoke_ms"] / base["neural_invoke_ms"])
                 if "neural_ms" in base else "-")
        lines.append("| %s (%s) | %s | %.0f | %.1f | %.2f | %s |" % (
            arch, r["machine"], r["neural"], r["neural_load_ms"], r["neural_ms"], r["neural_invoke_ms"], ratio))
    return "\n".join(lines)


def table(results: dict) -> str:
    base = results["native"]
    lines = ["| platform | image: decode + 3 digests + PDQ (ms, median) | single lookup, core (us) "
             "| batch lookup, numpy (keys/s) | slowdown vs native (image / single / batch) |",
             "|---|---|---|---|---|"]
    for arch, r in results.items():
        if arch == "micropython":
            lines.append("| micropython (%s, %s) | - | %.2f | - | - / %.1fx / - |" % (
                r["machine"], r["python"], r["single_lookup_us"], r["single_lookup_us"] / base["single_lookup_us"]))
            continue
        lines.append("| %s (%s, Python %s, numpy %s) | %.1f | %.2f | %.3g | %.1fx / %.1fx / %.1fx |" % (
            arch, r["machine"], r["python"], r["numpy"], r["image_ms"], r["single_lookup_us"],
            r["batch_keys_per_s"], r["image_ms"] / base["image_ms"],
            r["single_lookup_us"] / base["single_lookup_us"],
            base["batch_keys_per_s"] / r["batch_keys_per_s"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=("all", "native", "arm64", "armhf", "micropython"), default="all")
    ap.add_argument("--rss", action="store_true", help="also measure the agent's RSS with big lists")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--inner", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(Path(args.inner))))
        return 0
    arches = ["native", "arm64", "armhf", "micropython"] if args.arch == "all" else ["native", args.arch] \
        if args.arch != "native" else ["native"]
    share = make_share()
    try:
        return report(args, arches, share)
    finally:
        shutil.rmtree(share, ignore_errors=True)


def report(args, arches, share: Path) -> int:
    """Run the measurements and print the tables."""
    results = {}
    for arch in arches:
        t = time.perf_counter()
        results[arch] = run_micropython() if arch == "micropython" else run_on(arch, share)
        print("%s done in %.0f s: %s" % (arch, time.perf_counter() - t, json.dumps(results[arch])), file=sys.stderr)
    print(table(results))
    print()
    print(neural_table(results))
    if args.rss:
        rss = measure_rss(share)
        b, l = rss["baseline"], rss["loaded"]
        print()
        print("| `gatewatch run` (emulated HAL, local API) | VmRSS idle (MB) | VmRSS after %d scans (MB) "
              "| VmHWM peak (MB) | list files (MB) |" % len(l["verdicts"]))
        print("|---|---|---|---|---|")
        print("| one-entry lists (baseline) | %.1f | %.1f | %.1f | 0 |" % (
            b["rss_kb"] / 1024, b["scanned_rss_kb"] / 1024, b["hwm_kb"] / 1024))
        print("| 1M SHA-256 + 100k PDQ lists (fp 1e-6) | %.1f | %.1f | %.1f | %.1f |" % (
            l["rss_kb"] / 1024, l["scanned_rss_kb"] / 1024, l["hwm_kb"] / 1024, rss["filter_bytes"] / 2 ** 20))
        n = rss["neural"]
        print("| one-entry lists + 10k-entry neural list (model loaded) | %.1f | %.1f | %.1f | - |" % (
            n["rss_kb"] / 1024, n["scanned_rss_kb"] / 1024, n["hwm_kb"] / 1024))
        print("\nRSS with lists / baseline: %.2fx (after scans); peak goal <= 64 MB: %s" % (
            l["scanned_rss_kb"] / b["scanned_rss_kb"], "met" if l["hwm_kb"] <= 64 * 1024 else "NOT met"))
        print("RSS with the neural model loaded: +%.1f MB over the baseline after scans (%.2fx)" % (
            (n["scanned_rss_kb"] - b["scanned_rss_kb"]) / 1024, n["scanned_rss_kb"] / b["scanned_rss_kb"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
