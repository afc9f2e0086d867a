"""Private confirmation's costs, each against a baseline measured in the same run (docs/benchmarks.md,
"Private confirmation").

    python bench/bench_confirm.py                 # everything below, x86 here
    python bench/bench_confirm.py --quick         # smaller counts
    python bench/bench_confirm.py --arm           # also the device's crypto under qemu-user arm64/armhf (root)
    python bench/bench_confirm.py --round-trip-only --delay-ms 5   # the device 5 ms from the broker each
                                                  # way (a delaying relay; the hub sits next to the broker)

1. Round trip over a real mosquitto on loopback, cache off: the device's `Confirmer.ask` for an exact
   hit (evaluation + fetch, libsodium) against (a) the first version's protocol (short keys out, plain
   entries back; re-implemented here, as it was, for the comparison) and (b) a bare MQTT echo.
2. The device's crypto per request (blind 4 elements, unblind, open the records), libsodium and the
   pure-Python backend, against one SHA-256 of a 100 KB image as the unit of "cheap".
3. The hub: OPRF evaluations per second on one core (libsodium), against hashing to the group alone.
4. Sealing at `lists build`: records per second and bytes per entry of the sealed table, for PDQ and
   SHA-256 lists of random benign entries, against building the Bloom filter of the same list.
Entries are random benign digests; nothing here is list material.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.confirm import group, oprf, ristretto, sealed, wire  # noqa: E402
from agent.confirm.wire import Entry  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def entries(n, seed, size=32):
    import numpy as np

    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    return [Entry("e%d-%d" % (seed, i), raw[i].tobytes()) for i in range(n)]


# ---------------------------------------------------------------- 1. round trip

def fill_wallet(confirmer, svc, lst, n):
    """Issue ``n`` tokens through the service's own issuance (a bench asks for more than an epoch's 32)."""
    from agent.confirm import tokens

    pk = bytes.fromhex(lst.manifest["sealed"]["tokens"])
    while confirmer.wallet.count(lst.source) < n:
        batch = tokens.Issuance(lst.source, wire.MAX_TOKENS_PER_ISSUE, tokens.epoch_of(time.time()))
        _topic, body = svc.answer_tokens("bench-dev", wire.dumps(
            {"v": 2, "source": lst.source, "reply": "0" * 32, "e": [wire.b64(b) for b in batch.blinded]}))
        doc = json.loads(body)
        confirmer.wallet.add(lst.source, batch.finish([wire.unb64(e, 32) for e in doc["e"]],
                                                      wire.unb64(doc["proof"], 64), pk))


def bench_round_trip(tmp, requests, delay=0.0):
    from agent.confirm.client import Confirmer
    from agent.lists.store import load_folder
    from agent.lists.trust import TrustStore
    from agent.matching.scanner import Hit, ScanResult
    from agent.mqtt import MqttClient, Topics
    from tests.brokers import start_mosquitto
    from tools.build import build_list, generate_keys, load_private_key
    from tools.confirm_service import ConfirmService
    from tools.sealing import ConfirmKey, default_confirm_path

    priv, pub = generate_keys(os.path.join(tmp, "keys"), "bench", "bench")
    known = entries(10000, 7)
    out = os.path.join(tmp, "lists")
    build_list(source="bench", name="conf", signal="sha256", entries=known, key=load_private_key(priv), out_dir=out,
               confirm_key=ConfirmKey.load(default_confirm_path(priv)))
    lst = list(load_folder(out, TrustStore.from_specs([pub])).lists.values())[0]
    broker = start_mosquitto(tmp, extra_conf="set_tcp_nodelay true")
    clients = []
    try:
        topics = Topics()
        hub = MqttClient(broker.url, "bench-hub").connect()
        clients.append(hub)
        svc = ConfirmService(hub, topics, out, ttl_positive=0, ttl_negative=0, group=None,
                             token_budget=wire.MAX_TOKENS_PER_ISSUE * 16)
        svc.start()
        dev_url = broker.url
        if delay:
            dev_url = "mqtt://127.0.0.1:%d" % DelayLink(int(broker.url.rsplit(":", 1)[1]), delay).port
        dev = MqttClient(dev_url, "bench-dev").connect()
        clients.append(dev)
        confirmer = Confirmer(dev, topics, "bench-dev", timeout=10.0, lists=lambda: [lst]).start()
        fill_wallet(confirmer, svc, lst, requests + 8)
        results = [ScanResult("match", (Hit(lst, ((sealed.EXACT_BAND, e.hash),)),), digests={"sha256": e.hash})
                   for e in known[:requests]]
        # (a) the first version's protocol: short keys out, the plain entries behind them back
        index = {}
        for e in known:
            index.setdefault("sha256:" + e.hash[:4].hex(), []).append(e.to_json())
        legacy = MqttClient(broker.url, "bench-legacy-hub").connect()
        clients.append(legacy)

        def legacy_answer(m):
            req = json.loads(m.payload)
            body = {"v": 1, "id": req["id"], "ttl_positive": 0, "ttl_negative": 0,
                    "lists": {k: {"version": a["version"], "entries": {key: index.get(key, []) for key in a["keys"]}}
                              for k, a in req["lists"].items()}}
            legacy.publish("bench/legacy/resp/%s/%s" % (req["client"], req["id"]),
                           json.dumps(body, separators=(",", ":")).encode(), qos=1)
        legacy.subscribe("bench/legacy/req", legacy_answer, qos=1).wait(5)
        waiting = {}

        def legacy_got(m):
            ev = waiting.get(m.topic.rsplit("/", 1)[-1])
            if ev:
                ev.set()
        dev.subscribe("bench/legacy/resp/bench-dev/#", legacy_got, qos=1).wait(5)
        old = []
        for e in known[:requests]:
            rid = os.urandom(8).hex()
            ev = waiting[rid] = threading.Event()
            t = time.perf_counter()
            dev.publish("bench/legacy/req", json.dumps(
                {"v": 1, "id": rid, "client": "bench-dev",
                 "lists": {"bench/conf": {"version": 1, "keys": ["sha256:" + e.hash[:4].hex()]}}}).encode(), qos=1)
            ev.wait(5)
            old.append(time.perf_counter() - t)
        # (b) a bare echo of the same broker, QoS 1, payload the size of an evaluation request
        echo = MqttClient(broker.url, "bench-echo").connect()
        clients.append(echo)
        echo.subscribe("bench/echo/req", lambda m: echo.publish("bench/echo/resp", m.payload, qos=1)).wait(5)
        got = threading.Event()
        dev.subscribe("bench/echo/resp", lambda m: got.set()).wait(5)
        base = []
        for _ in range(requests):
            got.clear()
            t = time.perf_counter()
            dev.publish("bench/echo/req", b"x" * 520, qos=1)
            got.wait(5)
            base.append(time.perf_counter() - t)
        new, confirmed = [], 0
        for r in results:
            t = time.perf_counter()
            answered = confirmer.ask(r)
            new.append(time.perf_counter() - t)
            confirmed += bool(answered.get("bench/conf") and answered["bench/conf"].lookup(r.hits[0].probes[0]))
    finally:
        for c in clients:
            c.stop()
        broker.kill()
    res = {"requests": requests, "confirmed": confirmed}
    for name, xs in (("private", new), ("first_version", old), ("echo", base)):
        res[name] = {"p50_ms": round(pct(xs, 50) * 1000, 2), "p99_ms": round(pct(xs, 99) * 1000, 2),
                     "mean_ms": round(statistics.mean(xs) * 1000, 2)}
    for q in ("p50_ms", "p99_ms"):
        res["private_vs_first_version_" + q[:3]] = round(res["private"][q] / res["first_version"][q], 2)
        res["private_vs_echo_" + q[:3]] = round(res["private"][q] / res["echo"][q], 2)
    return res


# ---------------------------------------------------------------- 2. the device's crypto per request

def device_crypto(rounds):
    """Seconds per request of the device's own work: 4 blinds and unblinds (the worst case: every
    element real), opening 1 bucket."""
    sk, _ = oprf.generate_key_pair()
    inputs = [sealed.oprf_input("s", "l", "pdq", j, os.urandom(8)) for j in range(wire.ELEMENTS)]
    y = oprf.evaluate(sk, inputs[0])
    bucket = b"".join(sorted(sealed.seal(os.urandom(64), os.urandom(32), "e%d" % i) for i in range(50)))
    bucket += sealed.seal(y, os.urandom(32), "hit")
    evals = [oprf.blind_evaluate(sk, oprf.blind(x)[1]) for x in inputs]
    image = os.urandom(100_000)
    t = time.perf_counter()
    for _ in range(rounds):
        hashlib.sha256(image).digest()
    sha = (time.perf_counter() - t) / rounds
    t = time.perf_counter()
    for _ in range(rounds):
        blinded = [oprf.blind(x) for x in inputs]
        for (r, _b), e, x in zip(blinded, evals, inputs):
            oprf.finalize(x, r, e)
        sealed.open_bucket(y, bucket)
    return (time.perf_counter() - t) / rounds, sha


def bench_device(rounds):
    out = {}
    saved = group._impl
    try:
        for name in ("libsodium", "python"):
            try:
                group._use(group._libsodium() if name == "libsodium" else ristretto)
            except Exception as exc:  # no libsodium here: say so
                out[name] = {"error": str(exc)}
                continue
            per, sha = device_crypto(rounds if name == "libsodium" else max(3, rounds // 20))
            out[name] = {"per_request_ms": round(per * 1000, 2), "sha256_100kb_ms": round(sha * 1000, 3),
                         "vs_sha256": round(per / sha, 1)}
    finally:
        group._use(saved)
    return out


# ---------------------------------------------------------------- 3. the hub

def bench_hub(seconds):
    sk, _ = oprf.generate_key_pair()
    blinded = [oprf.blind(os.urandom(16))[1] for _ in range(256)]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in blinded:
            oprf.blind_evaluate(sk, b)
        n += len(blinded)
    evals = n / (time.perf_counter() - t0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in blinded:
            group.from_hash(hashlib.sha512(b).digest())
        n += len(blinded)
    h2g = n / (time.perf_counter() - t0)
    return {"evaluations_per_s_one_core": int(evals), "hash_to_group_per_s": int(h2g),
            "requests_per_s_one_core": int(evals / wire.ELEMENTS), "evaluation_vs_hash_to_group": round(h2g / evals, 2)}


# ---------------------------------------------------------------- 4. sealing at build time

def bench_sealing(n):
    from agent.lists.assemble import lsh_params
    from tools.sealing import ConfirmKey, seal_entries
    from agent.matching import bloom_batch
    from agent.core.bloom import Bloom, optimal_parameters
    from agent.lists.assemble import entry_keys
    import numpy as np

    key = ConfirmKey.generate("bench")
    out = {}
    for signal, size in (("sha256", 32), ("pdq", 32)):
        es = entries(n, 11, size)
        lsh = lsh_params(signal, None)
        t = time.perf_counter()
        table = seal_entries(key, "l", signal, es, lsh, 1)
        seal_s = time.perf_counter() - t
        nbytes = len(table.to_bytes())
        t = time.perf_counter()
        arr = np.frombuffer(b"".join(e.hash for e in es), dtype=np.uint8).reshape(n, -1)
        m, k = optimal_parameters(n * (lsh["bands"] if lsh else 1), 1e-6)
        bloom_batch.add_many(Bloom(m, k, os.urandom(16)), entry_keys(signal, arr, lsh))
        bloom_s = time.perf_counter() - t
        t = time.perf_counter()
        root = table.tree.root  # noqa: F841  (the commitment the manifest signs)
        tree_s = time.perf_counter() - t
        out[signal] = {"entries": n, "records": sum(len(sealed.split_records(b)) for b in table.buckets),
                       "buckets": len(table.buckets), "seal_s": round(seal_s, 2),
                       "entries_per_s": int(n / seal_s), "bloom_s": round(bloom_s, 3),
                       "seal_vs_bloom": round(seal_s / max(bloom_s, 1e-9), 1), "merkle_s": round(tree_s, 3),
                       "sealed_bytes_per_entry": round(nbytes / n, 1),
                       "est_1m_entries_min": round(seal_s / n * 1e6 / 60, 1)}
    return out


# ---------------------------------------------------------------- ARM under qemu-user

ARM_SCRIPT = r'''
import json, sys
sys.path.insert(0, ".")
from bench.bench_confirm import bench_device
print(json.dumps(bench_device(int(sys.argv[1]))))
'''


def bench_arm(rounds):
    from tests.arm.conftest import rootfs, run_user

    out = {}
    for arch in ("arm64", "armhf"):
        rootfs(arch)
        proc = run_user(arch, "python3", "-c", ARM_SCRIPT, str(rounds))
        if proc.returncode != 0:
            out[arch] = {"error": (proc.stderr or proc.stdout)[-400:]}
            continue
        out[arch] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


class DelayLink:
    """A TCP relay in front of the broker that holds every chunk ``delay`` seconds each way: the
    device's side of a real network (this kernel has no netem), order kept per direction."""

    def __init__(self, target_port: int, delay: float):
        import socket

        self.delay = delay
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((c, u), (u, c)):
                a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._pipe(a, b)

    def _pipe(self, src, dst):
        import queue

        q = queue.Queue()

        def reader():
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                q.put((time.monotonic() + self.delay, data))
                if not data:
                    return

        def writer():
            while True:
                due, data = q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    try:
                        dst.shutdown(1)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--arm", action="store_true", help="the device's crypto under qemu-user too (root)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--round-trip-only", action="store_true", help="only the round trips")
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="one-way delay between the device and the broker (a relay; the hub is next to the broker)")
    args = p.parse_args()
    requests, rounds, seal_n = (100, 50, 2000) if args.quick else (1000, 300, 20000)
    if args.delay_ms:
        requests = min(requests, 300)
    out = {}
    if args.round_trip_only:
        with tempfile.TemporaryDirectory(prefix="bench-confirm-") as tmp:
            out["round_trip"] = bench_round_trip(tmp, requests, args.delay_ms / 1000.0)
        out["round_trip"]["device_one_way_delay_ms"] = args.delay_ms
        print(json.dumps(out["round_trip"]), flush=True)
        return
    print("device crypto per request (%d blinded elements, unblinding them, opening a bucket of ~50 records):"
          % wire.ELEMENTS, flush=True)
    out["device"] = bench_device(rounds)
    for k, v in out["device"].items():
        print("  %-9s %s" % (k, v), flush=True)
    print("hub OPRF evaluations, one core (libsodium):", flush=True)
    out["hub"] = bench_hub(2.0 if args.quick else 5.0)
    print("  %s" % out["hub"], flush=True)
    print("sealing at lists build (%d random benign entries):" % seal_n, flush=True)
    out["sealing"] = bench_sealing(seal_n)
    for k, v in out["sealing"].items():
        print("  %-6s %s" % (k, v), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-confirm-") as tmp:
        print("round trip over mosquitto (%d requests, cache off):" % requests, flush=True)
        out["round_trip"] = bench_round_trip(tmp, requests)
        print("  %s" % json.dumps(out["round_trip"]), flush=True)
    if args.arm:
        print("device crypto under qemu-user:", flush=True)
        out["arm"] = bench_arm(max(10, rounds // 10))
        for k, v in out["arm"].items():
            print("  %-6s %s" % (k, v), flush=True)
    if args.json:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
