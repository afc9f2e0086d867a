"""Benchmarks for list distribution over MQTT (docs/benchmarks.md, "MQTT lists and confirmation").

    python bench/bench_mqtt.py            # full: 1,000,000-entry list, 1/10/100 agents
    python bench/bench_mqtt.py --quick    # smaller, for a smoke run

Each figure is printed with a ratio against a baseline measured in the same run:
- delta size for +10,000 entries on a 1,000,000-entry list vs the snapshot (and vs zlib of the XOR);
- publish-to-active for N simulated agents (real updaters, real mosquitto on loopback) vs 1 agent;
(Confirmation round trips: bench/bench_confirm.py.)
Entries are random benign digests; nothing here is real list material.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import delta as hub_delta  # noqa: E402
from agent.core import delta as core_delta  # noqa: E402
from agent.confirm.wire import Entry  # noqa: E402
from agent.lists.trust import TrustStore  # noqa: E402
from tools.build import build_list, generate_keys, load_private_key  # noqa: E402


def entries(n, seed):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return [Entry("e%d-%d" % (seed, i), raw[i].tobytes()) for i in range(n)]


def bench_delta(tmp, n, added):
    priv, pub = generate_keys(os.path.join(tmp, "keys"), "bench", "bench")
    key = load_private_key(priv)
    out = os.path.join(tmp, "delta-lists")
    base = entries(n, 1)
    t = time.perf_counter()
    v1, _, m1 = build_list(source="bench", name="sha", signal="sha256", entries=base, key=key, out_dir=out,
                           capacity=n + 2 * added, fp_rate=1e-6)
    build_s = time.perf_counter() - t
    v2, _, m2 = build_list(source="bench", name="sha", signal="sha256", entries=base + entries(added, 2), key=key,
                           out_dir=out, fp_rate=1e-6)
    assert m1["filter"]["m"] == m2["filter"]["m"] and m1["filter"]["salt"] == m2["filter"]["salt"]
    a, b = open(v1, "rb").read(), open(v2, "rb").read()
    t = time.perf_counter()
    d = hub_delta.encode(a, b)
    enc_s = time.perf_counter() - t
    t = time.perf_counter()
    assert core_delta.apply(a, d) == b
    apply_s = time.perf_counter() - t
    flipped = int(hub_delta.diff_positions(a[len(a) - m1["content_length"]:], b[len(b) - m2["content_length"]:]).size)
    xor = bytes(np.bitwise_xor(np.frombuffer(a[-m1["content_length"]:], np.uint8),
                               np.frombuffer(b[-m2["content_length"]:], np.uint8)))
    zx = len(zlib.compress(xor, 9))
    res = {"entries": n, "added": added, "snapshot_bytes": len(b), "delta_bytes": len(d),
           "bytes_per_added_entry": round(len(d) / added, 2), "delta_vs_snapshot": round(len(d) / len(b), 4),
           "bits_flipped": flipped, "bits_per_flipped_bit": round(8 * len(d) / max(flipped, 1), 2),
           "zlib9_xor_bytes": zx, "delta_vs_zlib9_xor": round(len(d) / zx, 3),
           "encode_s": round(enc_s, 3), "device_apply_s_pure_python": round(apply_s, 3), "build_s": round(build_s, 1)}
    return res, pub, (v1, v2)


def bench_fleet(tmp, broker_url, pub, counts, n_entries):
    from tools.fleet import publish_to_active
    priv = os.path.join(tmp, "keys", "bench.key")
    key = load_private_key(priv)
    out = os.path.join(tmp, "fleet-lists")
    base = entries(n_entries, 3)
    v1, _, _ = build_list(source="bench", name="fleet", signal="sha256", entries=base, key=key, out_dir=out,
                          capacity=n_entries * 2)
    trust = TrustStore.from_specs([pub])
    rows = []
    version = 1
    for n in counts:
        for mode in ("delta", "snapshot"):
            version += 1
            path, _, _ = build_list(source="bench", name="fleet", signal="sha256",
                                    entries=base + entries(1000 + version, 100 + version), key=key, out_dir=out,
                                    version=version)
            pubdir = os.path.join(tmp, "pub-%d" % version)
            os.makedirs(pubdir)
            held = None
            if mode == "delta":
                prev = os.path.join(out, "bench.fleet.v%d.gwl" % (version - 1))
                os.link(prev, os.path.join(pubdir, os.path.basename(prev)))
                held = [prev]
            os.link(path, os.path.join(pubdir, os.path.basename(path)))
            r = publish_to_active(broker_url, pubdir, n, trust, "bench/fleet", version, held=held)
            r["mode"] = mode
            r["update_bytes"] = None
            rows.append(r)
            print("  fleet %-8s %3d agents: last active %.3fs (median %.3fs, publish took %.3fs) via %s" % (
                mode, n, r["last_s"], r["median_s"], r["publish_s"], r["via"]), flush=True)
    for mode in ("delta", "snapshot"):
        base_row = next(r for r in rows if r["mode"] == mode and r["agents"] == counts[0])
        for r in rows:
            if r["mode"] == mode:
                r["last_vs_%d_agent" % counts[0]] = round(r["last_s"] / base_row["last_s"], 2)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("--nagle", action="store_true",
                   help="leave mosquitto's default set_tcp_nodelay false (adds ~40 ms delayed-ACK stalls)")
    args = p.parse_args()
    from tests.brokers import start_mosquitto

    n, added = (100_000, 1_000) if args.quick else (1_000_000, 10_000)
    counts = [1, 10] if args.quick else [1, 10, 100]
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        print("delta: %d entries + %d" % (n, added), flush=True)
        d, pub, _ = bench_delta(tmp, n, added)
        print("  snapshot %d bytes, delta %d bytes: %.2f bytes per added entry, %.2f%% of the snapshot, "
              "%.2fx zlib-9 of the XOR; device applies it in %.2fs (pure Python)"
              % (d["snapshot_bytes"], d["delta_bytes"], d["bytes_per_added_entry"], 100 * d["delta_vs_snapshot"],
                 d["delta_vs_zlib9_xor"], d["device_apply_s_pure_python"]), flush=True)
        broker = start_mosquitto(tmp, extra_conf="" if args.nagle else "set_tcp_nodelay true")
        try:
            print("publish-to-active (real mosquitto on loopback, 20,000-entry list):", flush=True)
            f = bench_fleet(tmp, broker.url, pub, counts, 20_000)
        finally:
            broker.kill()
    if args.json:
        print(json.dumps({"delta": d, "fleet": f}, sort_keys=True))


if __name__ == "__main__":
    main()
