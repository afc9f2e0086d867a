"""Private confirmation as its three adversaries see it, over a real mosquitto (docs/privacy.md).

- An honest-but-curious hub records every request: for images that do not match and for random data
  the requests look alike (four uniformly distributed group elements, four bucket indices, equal
  sizes and counts) and hold no client id, login or hash.
- A malicious device with a valid login and its tokens: chosen probes, replayed tokens, other devices'
  answers, a flood of requests: it opens no entry it holds no near-duplicate of, and the hub's flood
  alarm fires while the hub keeps serving.
- A lying hub (or broker) that forges, swaps or withholds what it sends: the device never confirms or
  reports a forged entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import threading
import time

from agent.confirm import group, oprf, sealed, tokens, wire
from agent.confirm.sealed import EXACT_BAND
from agent.core.lsh import band_values
from agent.hashing.samples import encode, generate_image
from agent.matching.scanner import Hit, ScanResult
from agent.mqtt import MqttClient, Topics
from agent.policy import Policy, PolicySettings
from tests.brokers import mosquitto  # noqa: F401
from tests.confirm.test_confirm import Pair, world  # noqa: F401
from tests.listkit import device_confirmer, wait_for
from tools.confirm_service import ConfirmService


def _hit_with(lst, probes, digests=None):
    return ScanResult("candidate" if lst.signal == "pdq" else "match", (Hit(lst, tuple(probes)),),
                      digests=digests or {})


def _pdq_list(world):
    return next(lst for lst in world["lists"] if lst.signal == "pdq")


def _sha_list(world):
    return next(lst for lst in world["lists"] if lst.signal == "sha256")


def _record(broker):
    """A spy with the hub's rights: every request on confirm/eval and confirm/fetch, in order."""
    seen = []
    spy = MqttClient(broker.url, "curious-hub").connect()
    for t in Topics().confirm_request_filters():  # confirm/<kind>/<partition>
        spy.subscribe(t, lambda m: seen.append((m.topic.split("/")[3], m.payload))).wait(5)
    return spy, seen


def _bit_frequencies(elements):
    counts = [0] * 256
    for e in elements:
        x = int.from_bytes(e, "little")
        for i in range(256):
            counts[i] += (x >> i) & 1
    return [c / len(elements) for c in counts]


def test_honest_but_curious_hub_learns_nothing_from_non_matching_images(mosquitto, world, tmp_path):
    spy, seen = _record(mosquitto)
    p = Pair(mosquitto, world, tmp_path, ttl=(0.0, 0.0))
    try:
        pdq, sha = _pdq_list(world), _sha_list(world)
        wait_for(lambda: p.confirmer.wallet.count("hl1") >= 48)
        # probes an unrelated image would send had it been a (false) candidate: its real bands
        unrelated = [encode(generate_image(5000 + i, (256, 192)), "JPEG", 85) for i in range(24)]
        groups = {"images": [], "random": []}
        for data in unrelated:
            h = world["scanner"].scan_bytes(data).hashes
            probes = [(j, sealed.band_value_bytes(v)) for j, v in enumerate(band_values(h.pdq, pdq.lsh["bands"]))][:3]
            groups["images"].append(_hit_with(pdq, probes))
        rng = random.Random(7)
        for _ in range(24):
            groups["random"].append(_hit_with(sha, [(EXACT_BAND, bytes(rng.getrandbits(8) for _ in range(32)))]))
        recorded = {}
        for name, results in groups.items():
            start = len(seen)
            for r in results:
                answered = p.confirmer.ask(r)
                hit = r.hits[0]
                assert hit.list.ident in answered  # answered, and nothing opened
                assert all(answered[hit.list.ident].lookup(q) == [] for q in hit.probes)
            wait_for(lambda: len(seen) >= start + 2 * len(results))
            recorded[name] = seen[start:start + 2 * len(results)]
    finally:
        p.close()
        spy.stop()

    texts = [payload.decode() for rec in recorded.values() for _, payload in rec]
    for t in texts:  # no identity, no hash of any kind
        assert "dev-a" not in t and "client" not in t
    for data in unrelated:
        h = world["scanner"].scan_bytes(data)
        for t in texts:
            assert h.hashes.pdq.hex() not in t and wire.b64(h.hashes.pdq) not in t
            assert h.digests["sha256"].hex() not in t
    # counts and sizes independent of the image: one evaluation and one fetch each, equal lengths
    for name, rec in recorded.items():
        kinds = [k for k, _ in rec]
        assert kinds == ["eval", "fetch"] * (len(rec) // 2), name
    eval_sizes = {len(pl) for rec in recorded.values() for k, pl in rec if k == "eval"}
    assert len(eval_sizes) == 1, eval_sizes
    fetch_docs = [json.loads(pl) for rec in recorded.values() for k, pl in rec if k == "fetch"]
    assert {len(d["b"]) for d in fetch_docs} == {wire.BUCKETS_PER_FETCH}
    # blinded elements: valid, never repeated, and distributed like random group elements
    elements = {name: [wire.unb64(x, 32) for k, pl in rec if k == "eval" for x in json.loads(pl)["e"]]
                for name, rec in recorded.items()}
    allel = elements["images"] + elements["random"]
    assert len(set(allel)) == len(allel) and all(group.is_element(e) for e in allel)
    reference = [group.random_element() for _ in range(2000)]
    f_img, f_rand, f_ref = (_bit_frequencies(x) for x in (elements["images"], elements["random"], reference))
    n = len(elements["images"])
    tol = 5 * (0.25 * (1 / n + 1 / len(reference))) ** 0.5  # five standard deviations of the difference
    for i in range(256):
        if f_ref[i] in (0.0, 1.0):  # bits the encoding fixes (canonical, non-negative): fixed everywhere
            assert f_img[i] == f_rand[i] == f_ref[i], i
        else:
            assert abs(f_img[i] - f_ref[i]) < tol and abs(f_rand[i] - f_ref[i]) < tol, (i, f_img[i], f_rand[i])
    # bucket indices: what the hub can see of a fetch is spread over the table like chance
    n_buckets = _pdq_list(world).manifest["sealed"]["buckets"]
    idx = [i for d in fetch_docs if d["list"] == "hl1/pdq" for i in d["b"]]
    assert all(0 <= i < n_buckets for i in idx) and len(set(idx)) > n_buckets // 3


def test_the_same_image_asked_twice_looks_like_two_strangers(mosquitto, world, tmp_path):
    spy, seen = _record(mosquitto)
    p = Pair(mosquitto, world, tmp_path, ttl=(0.0, 0.0))
    try:
        r = world["scanner"].scan_bytes(world["edited"])
        p.confirmer.ask(r)
        p.confirmer.ask(r)
        wait_for(lambda: len(seen) >= 4)
    finally:
        p.close()
        spy.stop()
    evals = [json.loads(pl) for k, pl in seen if k == "eval"]
    assert len(evals) == 2
    assert not set(evals[0]["e"]) & set(evals[1]["e"])  # fresh blinds: nothing links the two
    assert evals[0]["reply"] != evals[1]["reply"] and evals[0]["token"]["n"] != evals[1]["token"]["n"]


def test_malicious_device_with_a_valid_login_opens_nothing(mosquitto, world, tmp_path):
    """Chosen probes, a replayed token, another device's answers: no entry opens."""
    victim = Pair(mosquitto, world, tmp_path, ttl=(0.0, 0.0))
    attacker_client = MqttClient(mosquitto.url, "dev-evil").connect()
    captured = queue.Queue()
    try:
        # the attacker reads every confirmation answer it can (the ACL lets devices read confirm/resp/+)
        attacker_client.subscribe("gatewatch/v1/confirm/resp/+", captured.put).wait(5)
        attacker = device_confirmer(attacker_client, world["lists"], "dev-evil", timeout=3.0)
        sha, pdq = _sha_list(world), _pdq_list(world)
        known_sha = [hashlib.sha256(b).digest() for b in world["known"]]
        # 1. chosen probes: random digests, digests one bit off the real ones, random band values
        rng = random.Random(11)
        chosen = [(EXACT_BAND, bytes(rng.getrandbits(8) for _ in range(32))) for _ in range(8)]
        chosen += [(EXACT_BAND, d[:31] + bytes([d[31] ^ 1])) for d in known_sha]
        for i in range(0, len(chosen), 4):
            got = attacker.ask(_hit_with(sha, chosen[i:i + 4]))
            assert all(not got["hl1/sha"].lookup(p) for p in chosen[i:i + 4])
        band_guess = [(j, sealed.band_value_bytes(rng.getrandbits(36))) for j in range(7)]
        got = attacker.ask(_hit_with(pdq, band_guess))
        assert all(not got["hl1/pdq"].lookup(p) for p in band_guess)
        # 2. the victim confirms a real image; the attacker holds what went over its reply topics
        drain = []
        while not captured.empty():
            captured.get()  # the attacker's own answers
        r = world["scanner"].scan_bytes(world["known"][1])
        assert world["scanner"].confirm(r, victim.confirmer.ask(r)).verdict == "match"
        wait_for(lambda: captured.qsize() >= 2)
        while not captured.empty():
            drain.append(json.loads(captured.get().payload))
        evals = [d for d in drain if "e" in d]
        buckets = [b for d in drain if "buckets" in d for b in d["buckets"]]
        assert evals and buckets
        # the evaluations are blinded by the victim's secret: as outputs they open nothing, and
        # unblinded with a guessed scalar neither
        for d in evals:
            for e in d["e"]:
                el = wire.unb64(e, 32)
                for y in (hashlib.sha512(el).digest(), oprf.finalize(b"x", group.random_scalar(), el)):
                    for b in buckets:
                        assert sealed.open_bucket(y, wire.unb64(b["data"])) == []
        # 3. replaying the victim's token: refused, nothing evaluated
        svc = victim.services[0]
        before = svc.stats.totals().get("refused-token-spent", 0)
        spy_token = {"n": wire.b64(bytes(32)), "y": wire.b64(bytes(64))}
        tok = victim.confirmer.wallet.take("hl1")
        assert tok is not None
        req = {"v": 2, "key": sha.manifest["sealed"]["key"], "reply": os.urandom(16).hex(),
               "token": {"n": wire.b64(tok[0]), "y": wire.b64(tok[1])},
               "e": [wire.b64(group.random_element()) for _ in range(wire.ELEMENTS)]}
        assert "error" not in json.loads(svc.answer_eval(json.dumps(req).encode())[1])
        again = json.loads(svc.answer_eval(json.dumps(dict(req, reply=os.urandom(16).hex())).encode())[1])
        assert again["error"] == "token-spent" and svc.stats.totals()["refused-token-spent"] == before + 1
        forged = json.loads(svc.answer_eval(json.dumps(dict(req, token=spy_token)).encode())[1])
        assert forged["error"] in ("token-invalid", "token-expired")
    finally:
        attacker_client.stop()
        victim.close()


def test_a_flood_is_bounded_counted_and_raises_the_alarm(mosquitto, world, tmp_path):
    """100,000 requests in a bounded loop: every one refused after the device's tokens run out, the
    flood alarm fires, and a legitimate device is still served."""
    hub = MqttClient(mosquitto.url, "hub-flood").connect()
    alarm_seen = queue.Queue()
    watcher = MqttClient(mosquitto.url, "hub-watcher").connect()  # an operator's dashboard, say
    watcher.subscribe(Topics().hub_alarm(), alarm_seen.put).wait(5)
    svc = ConfirmService(hub, Topics(), world["hub"].out, alarm_refusals_per_minute=600,
                         db=str(tmp_path / "flood.sqlite")).start()
    assert svc.subscription.wait(5)
    evil = MqttClient(mosquitto.url, "dev-flood").connect()
    good = MqttClient(mosquitto.url, "dev-good").connect()
    try:
        attacker = device_confirmer(evil, world["lists"], "dev-flood", timeout=3.0)
        sha = _sha_list(world)
        # the attacker's whole budget of chosen probes: each opens nothing, then the tokens are gone
        rng = random.Random(3)
        spent = 0
        while attacker.wallet.count("hl1"):
            got = attacker.ask(_hit_with(sha, [(EXACT_BAND, bytes(rng.getrandbits(8) for _ in range(32)))]))
            assert all(not v.by_probe.get(p) for v in got.values() for p in v.by_probe)
            spent += 1
        assert spent == tokens.DEFAULT_BUDGET
        assert attacker.refill_all() == 0  # no second batch this epoch for this login
        assert json.loads(svc.answer_tokens("dev-flood", json.dumps(
            {"v": 2, "source": "hl1", "reply": "0" * 32, "e": [wire.b64(group.random_element())]}).encode())[1]
        )["error"] == "budget"
        # then a flood: 100,000 requests with made-up or replayed tokens, in a bounded loop
        tok_n, tok_y = os.urandom(32), os.urandom(64)
        elements = [wire.b64(group.random_element()) for _ in range(wire.ELEMENTS)]
        key = sha.manifest["sealed"]["key"]
        t0 = time.monotonic()
        sent = 0
        for i in range(100_000):
            req = {"v": 2, "key": key, "reply": "%032x" % i, "token": {"n": wire.b64(tok_n), "y": wire.b64(tok_y)},
                   "e": elements}
            evil.publish(Topics().confirm_eval(), wire.dumps(req), qos=0)
            sent += 1
            if time.monotonic() - t0 > 120:
                break
        assert sent == 100_000
        wait_for(lambda: svc.alarm.times_raised, 60)
        assert json.loads(alarm_seen.get(timeout=30).payload)["alarm"] is True
        # nothing was evaluated for any of them
        totals = svc.stats.totals()
        assert totals.get("evaluations", 0) == (spent) * wire.ELEMENTS
        # every one of them was read and refused (the service drains the backlog), and then a
        # legitimate device is served as before
        wait_for(lambda: svc.rejected >= 100_000, 180)
        honest = device_confirmer(good, world["lists"], "dev-good", timeout=10.0)
        r = world["scanner"].scan_bytes(world["known"][0])
        assert world["scanner"].confirm(r, honest.ask(r)).verdict == "match"
    finally:
        evil.stop()
        good.stop()
        hub.stop()
        watcher.stop()


class _LyingHub:
    """Answers as a hub would, then alters the fetch answer with ``tamper(doc, probe_outputs)``."""

    def __init__(self, broker, world, tamper):
        self.client = MqttClient(broker.url, "lying-hub").connect()
        self.svc = ConfirmService(None, Topics(), world["hub"].out)
        self.tamper = tamper
        for t in Topics().confirm_request_filters():
            self.client.subscribe(t, self._on).wait(5)
        self.client.subscribe(Topics().tokens_req_filter(), self._tokens).wait(5)  # tokens/req/<login>/<p>

    def _tokens(self, msg):
        topic, body = self.svc.answer_tokens(msg.topic.split("/")[4], msg.payload)
        self.client.publish(topic, body, qos=1)

    def _on(self, msg):
        if "/eval" in msg.topic:
            topic, body = self.svc.answer_eval(msg.payload)
        else:
            topic, body = self.svc.answer_fetch(msg.payload)
            body = wire.dumps(self.tamper(json.loads(body), self.svc))
        self.client.publish(topic, body, qos=1)

    def stop(self):
        self.client.stop()


def _forge_record_for(svc, lst, probe, fake_hash, fake_id):
    """What a hub that knows the image could seal: a record opening under the device's own probe."""
    key = next(iter(svc.keys.values()))
    y = oprf.evaluate(key.oprf_sk, sealed.oprf_input(lst.source, lst.name, lst.signal, probe[0], probe[1]))
    return sealed.Opening(y).bucket(lst.manifest["sealed"]["buckets"]), sealed.seal(y, fake_hash, fake_id)


def test_a_lying_hub_never_makes_the_device_confirm_or_report(mosquitto, world, tmp_path):
    # an image that is NOT listed; the hub wants the device to report it as a match
    target = encode(generate_image(4242, (256, 192)), "JPEG", 90)
    digest = hashlib.sha256(target).digest()
    sha = _sha_list(world)
    probe = (EXACT_BAND, digest)
    result = ScanResult("match", (Hit(sha, (probe,), distance=0),), digests={"sha256": digest})

    def add_forged(doc, svc):  # the forged record in the right bucket, the honest proof kept
        b, rec = _forge_record_for(svc, sha, probe, digest, "forged")
        for item in doc["buckets"]:
            if item["i"] == b:
                item["data"] = wire.b64(wire.unb64(item["data"]) + rec)
        return doc

    def bucket_of_another_version(doc, svc):  # a real, consistent bucket: but proof for another root
        for item in doc["buckets"]:
            item["proof"] = [wire.b64(os.urandom(32)) for _ in item["proof"]]
        return doc

    def drop_buckets(doc, svc):
        doc["buckets"] = []
        return doc

    for tamper in (add_forged, bucket_of_another_version, drop_buckets):
        liar = _LyingHub(mosquitto, world, tamper)
        dev = MqttClient(mosquitto.url, "dev-lied-to").connect()
        reports = []
        try:
            c = device_confirmer(dev, world["lists"], "dev-lied-to", timeout=3.0)
            policy = Policy(PolicySettings(exact_unconfirmed="allow"), c.ask, world["scanner"].confirm,
                            lambda r, u: reports.append(r))
            d = policy.decide(result, "http://origin.test/t.jpg")
            assert d.action == "allow" and d.reason != "match-confirmed", (tamper.__name__, d.reason)
            assert reports == [] and c.bad_answers >= 1, tamper.__name__
            assert len(c.cache) == 0  # nothing a liar said is remembered
        finally:
            dev.stop()
            liar.stop()


def test_the_forged_record_would_open_without_the_commitment_check(world):
    """The lying-hub test above fails for the right reason: the forged record does open under the
    device's probe; only the signed bucket commitment stops it."""
    svc = ConfirmService(None, Topics(), world["hub"].out)
    sha = _sha_list(world)
    digest = hashlib.sha256(b"some benign bytes").digest()
    probe = (EXACT_BAND, digest)
    b, rec = _forge_record_for(svc, sha, probe, digest, "forged")
    key = next(iter(svc.keys.values()))
    y = oprf.evaluate(key.oprf_sk, sealed.oprf_input(sha.source, sha.name, sha.signal, *probe))
    table = svc.tables["hl1/sha"][sha.version]
    assert sealed.open_bucket(y, table.buckets[b] + rec) == [(digest, "forged")]
    root = bytes.fromhex(sha.manifest["sealed"]["root"])
    n = sha.manifest["sealed"]["buckets"]
    assert sealed.verify_bucket(b, table.buckets[b], table.tree.proof(b), root, n)
    assert not sealed.verify_bucket(b, table.buckets[b] + rec, table.tree.proof(b), root, n)


def test_sealed_tables_hold_no_plain_entry(world):
    """What the confirmation service holds and serves: no entry hash or id in the clear."""
    folder = os.path.join(world["hub"].out, "hub")
    blobs = b"".join(open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder) if n.endswith(".sealed"))
    for b in world["known"]:
        assert hashlib.sha256(b).digest() not in blobs
    assert b"known-" not in blobs


def test_concurrent_devices_each_get_their_own_answers(mosquitto, world, tmp_path):
    p = Pair(mosquitto, world, tmp_path, ttl=(0.0, 0.0))
    clients = [MqttClient(mosquitto.url, "dev-c%d" % i).connect() for i in range(4)]
    try:
        confirmers = [device_confirmer(c, world["lists"], "dev-c%d" % i, timeout=10.0) for i, c in enumerate(clients)]
        verdicts = []

        def run(c, k):
            r = world["scanner"].scan_bytes(world["known"][k % 4])
            verdicts.append((k % 4, world["scanner"].confirm(r, c.ask(r)).best.entry_id))
        threads = [threading.Thread(target=run, args=(c, k)) for k, c in enumerate(confirmers * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(verdicts) == sorted((k, "known-%d" % k) for k in list(range(4)) * 2)
    finally:
        for c in clients:
            c.stop()
        p.close()
