"""Hub confirmation over a real mosquitto: answers, caching, shared subscriptions, policy decisions."""

from __future__ import annotations

import hashlib
import json
import pytest

from agent.confirm import group, tokens, wire
from agent.confirm.client import ConfirmCache
from agent.confirm.sealed import EXACT_BAND
from agent.hashing.imaging import hash_image
from agent.confirm.wire import Entry
from agent.lists.store import load_folder
from agent.lists.trust import TrustStore
from agent.mqtt import MqttClient, Topics
from agent.policy import Policy, PolicyInspector, PolicySettings
from agent.hashing.samples import encode, generate_image, transform
from agent.matching.scanner import Scanner
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, device_confirmer, issue_tokens, wait_for
from tools.confirm_service import ConfirmService


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Known (benign, generated) images, a sha256 and a pdq list built from them, and a scanner."""
    tmp = tmp_path_factory.mktemp("confirm")
    hub = Hub(tmp / "hub")
    known = [encode(generate_image(100 + i, (384, 288)), "JPEG", 90) for i in range(4)]
    hub.build([Entry("known-%d" % i, hashlib.sha256(b).digest()) for i, b in enumerate(known)],
              name="sha", capacity=100)
    hub.build([Entry("known-%d" % i, hash_image(b, fast=False).pdq) for i, b in enumerate(known)],
              name="pdq", signal="pdq", capacity=100)
    lists = list(load_folder(hub.out, TrustStore.from_specs([hub.pub_path])).lists.values())
    return {"hub": hub, "known": known, "scanner": Scanner(lists), "lists": lists,
            "unrelated": encode(generate_image(999, (384, 288)), "JPEG", 90),
            "edited": encode(transform(generate_image(101, (384, 288)), "jpeg50"), "JPEG", 85)}


class Pair:
    def __init__(self, broker, world, tmp_path, services=1, ttl=(60.0, 30.0), clock=None):
        self.hub_clients, self.services = [], []
        for i in range(services):
            c = MqttClient(broker.url, "hub%d" % i).connect()
            s = ConfirmService(c, Topics(), world["hub"].out, ttl_positive=ttl[0], ttl_negative=ttl[1],
                               db=str(tmp_path / ("stats%d.sqlite" % i))).start()
            assert s.subscription.wait(5)
            self.hub_clients.append(c)
            self.services.append(s)
        self.dev = MqttClient(broker.url, "dev-a").connect()
        cache = ConfirmCache(clock=clock) if clock else None
        self.confirmer = device_confirmer(self.dev, world["lists"], "dev-a", timeout=3.0, cache=cache)

    def close(self):
        self.dev.stop()
        for c in self.hub_clients:
            c.stop()


def test_exact_and_perceptual_hits_confirmed_by_the_hub(mosquitto, world, tmp_path):
    p = Pair(mosquitto, world, tmp_path)
    try:
        scanner = world["scanner"]
        r = scanner.scan_bytes(world["known"][1])
        assert r.verdict == "match"
        answered = p.confirmer.ask(r)
        assert set(answered) == {"hl1/sha", "hl1/pdq"} or set(answered) == {"hl1/sha"}
        c = scanner.confirm(r, answered)
        assert c.verdict == "match" and c.best.confirmed and c.best.entry_id == "known-1"

        e = scanner.scan_bytes(world["edited"])  # a JPEG q50 copy of known-1: only a candidate
        assert e.verdict == "candidate"
        c = scanner.confirm(e, p.confirmer.ask(e))
        assert c.verdict == "match" and c.best.entry_id == "known-1" and c.best.distance <= 31
        totals = p.services[0].stats.totals()
        # counts per kind only: evaluations (8 a request, padded), fetches, tokens issued
        assert totals["evaluations"] % wire.ELEMENTS == 0 and totals["evaluations"] >= wire.ELEMENTS
        assert totals["fetches"] >= 2 and totals["tokens-issued"] == tokens.DEFAULT_BUDGET
    finally:
        p.close()


def test_requests_carry_only_blinded_values(mosquitto, world, tmp_path):
    seen = []
    with MqttClient(mosquitto.url, "spy") as spy:
        for t in Topics().confirm_request_filters():
            spy.subscribe(t, lambda m: seen.append((m.topic, m.payload))).wait(5)
        p = Pair(mosquitto, world, tmp_path)
        try:
            e = world["scanner"].scan_bytes(world["edited"])
            p.confirmer.ask(e)
            wait_for(lambda: len(seen) >= 2)
        finally:
            p.close()
    for topic, payload in seen:
        text = payload.decode()
        assert "dev-a" not in text  # no client id, no login
        for h in (e.hashes.pdq, e.digests["sha256"]):
            assert h.hex() not in text and wire.b64(h) not in text  # never a hash
        req = json.loads(payload)
        if "/eval" in topic:
            assert set(req) == {"v", "key", "reply", "token", "e"}
            assert len(req["e"]) == wire.ELEMENTS and all(group.is_element(wire.unb64(x, 32)) for x in req["e"])
        else:
            assert set(req) == {"v", "list", "version", "ticket", "reply", "b"}
            assert len(req["b"]) == wire.BUCKETS_PER_FETCH


def test_answers_cached_for_the_hub_durations(mosquitto, world, tmp_path):
    clock = Clock()
    p = Pair(mosquitto, world, tmp_path, ttl=(100.0, 10.0), clock=clock)
    try:
        scanner = world["scanner"]
        known = scanner.scan_bytes(world["known"][0])
        known = known._replace(hits=tuple(h for h in known.hits if h.list.signal == "sha256"))
        p.confirmer.ask(known)
        assert p.confirmer.requests == 1
        p.confirmer.ask(known)
        assert p.confirmer.requests == 1  # positive answer served from the cache
        clock.t += 101
        p.confirmer.ask(known)
        assert p.confirmer.requests == 2  # positive expired after ttl_positive
        # a probe that opens nothing (no entry has that digest) is a negative answer, cached for ttl_negative
        probe = (EXACT_BAND, bytes(32))
        fake = known._replace(hits=(known.hits[0]._replace(probes=(probe,)),))
        answered = p.confirmer.ask(fake)
        assert answered["hl1/sha"].lookup(probe) == []
        assert scanner.confirm(fake, answered).verdict == "clean"
        n = p.confirmer.requests
        p.confirmer.ask(fake)
        assert p.confirmer.requests == n
        clock.t += 11
        p.confirmer.ask(fake)
        assert p.confirmer.requests == n + 1
    finally:
        p.close()


def test_shared_subscription_spreads_requests(mosquitto, world, tmp_path):
    """An evaluation and its fetch may reach different instances: the ticket is good at both."""
    p = Pair(mosquitto, world, tmp_path, services=2, ttl=(0.0, 0.0))
    try:
        r = world["scanner"].scan_bytes(world["known"][2])
        r = r._replace(hits=tuple(h for h in r.hits if h.list.signal == "sha256"))
        wait_for(lambda: p.confirmer.wallet.count("hl1") >= 20)
        for _ in range(20):
            assert "hl1/sha" in p.confirmer.ask(r)
        counts = [s.answered for s in p.services]
        assert sum(counts) - 1 == 40  # each request (and the one token batch) answered exactly once
        assert all(c > 0 for c in counts), counts
    finally:
        p.close()


def test_hub_unreachable_policy_without_reports(mosquitto, world, tmp_path):
    # tokens first (the hub is there), then the hub goes away
    p = Pair(mosquitto, world, tmp_path)
    for c in p.hub_clients:
        c.stop()
    reports = []
    try:
        confirmer = p.confirmer
        confirmer.timeout = 0.3
        scanner = world["scanner"]
        policy = Policy(PolicySettings(), confirmer.ask, scanner.confirm, lambda r, u: reports.append(r))
        insp = PolicyInspector(lambda: scanner, policy)
        d = insp.inspect(world["known"][0], "image/jpeg", "http://origin.test/a.jpg")
        assert (d.action, d.reason) == ("block", "match-unconfirmed")  # exact hit: near-certain
        d = insp.inspect(world["edited"], "image/jpeg", "http://origin.test/b.jpg")
        assert (d.action, d.reason) == ("allow", "unconfirmed-candidate")  # candidate: not enough
        d = insp.inspect(world["unrelated"])
        assert d.action == "allow"
        assert reports == []  # never a report for an unconfirmed hit
        assert confirmer.timeouts >= 2
    finally:
        p.dev.stop()


def test_no_tokens_is_unconfirmed_and_counted(mosquitto, world):
    dev = MqttClient(mosquitto.url, "dev-b").connect()
    try:
        confirmer = device_confirmer(dev, world["lists"], "dev-b", timeout=0.3, tokens=False)
        r = world["scanner"].scan_bytes(world["known"][0])
        assert confirmer.ask(r) == {} and confirmer.no_tokens >= 1 and confirmer.requests == 0
    finally:
        dev.stop()


def test_policy_with_hub(mosquitto, world, tmp_path):
    p = Pair(mosquitto, world, tmp_path)
    try:
        scanner = world["scanner"]
        for mode, action, reported in (("block", "block", 1), ("report-only", "allow", 1), ("monitor", "allow", 0)):
            reports = []
            policy = Policy(PolicySettings(mode=mode), p.confirmer.ask, scanner.confirm,
                            lambda r, u: reports.append((r, u)))
            d = PolicyInspector(lambda: scanner, policy).inspect(world["edited"], url="http://origin.test/x.jpg")
            assert d.action == action, mode
            assert len(reports) == reported
            if reports:
                r, u = reports[0]
                assert r.best.confirmed and r.best.entry_id == "known-1" and u == "http://origin.test/x.jpg"
    finally:
        p.close()


def test_bad_settings_and_requests_refused(world, tmp_path):
    from agent.core.errors import ConfigError

    for kw in ({"mode": "drop"}, {"exact_unconfirmed": "maybe"}, {"confirm_timeout": 0}, {"reconfirm_hours": -1}):
        with pytest.raises(ConfigError):
            PolicySettings(**kw)
    svc = ConfirmService(None, Topics(), world["hub"].out)
    rid = "0" * 32
    key = next(iter(svc.keys))
    toks = iter(issue_tokens(svc, "hl1", 8))

    def good(**kw):
        n, y = next(toks)
        doc = {"v": 2, "key": key, "reply": rid, "token": {"n": wire.b64(n), "y": wire.b64(y)},
               "e": [wire.b64(group.random_element()) for _ in range(wire.ELEMENTS)]}
        doc.update(kw)
        return doc
    for bad in (b"", b"[]", b'{"v":1}', b'{"v":true}', b'{"v":2,"reply":"a/b"}', b"\xff" * 10, b"{" * 100000):
        assert svc.answer_eval(bad) is None and svc.answer_fetch(bad) is None, bad
        assert svc.answer_tokens("dev", bad) is None, bad
    one = [wire.b64(group.random_element())]
    cases = [
        (good(key="ab"), "malformed"), (good(e=one * (wire.ELEMENTS - 1)), "malformed"),
        (good(e=one * (wire.ELEMENTS - 1) + [wire.b64(bytes(32))]), "malformed"),  # the identity is no element
        (good(e=one * (wire.ELEMENTS - 1) + ["\u0661" * 44]), "malformed"),
        (good(key="f" * 16), "unknown-key"),
        (good(token={"n": wire.b64(bytes(32)), "y": wire.b64(bytes(64))}), "token-expired"),  # epoch 0
    ]
    for doc, word in cases:
        topic, body = svc.answer_eval(json.dumps(doc).encode())
        assert topic == "gatewatch/v1/confirm/resp/" + rid and json.loads(body) == {"v": 2, "reply": rid, "error": word}
    replay = good()
    assert "error" not in json.loads(svc.answer_eval(json.dumps(replay).encode())[1])
    assert json.loads(svc.answer_eval(json.dumps(replay).encode())[1])["error"] == "token-spent"
    n = wire.BUCKETS_PER_FETCH
    fetch = {"v": 2, "list": "hl1/sha", "version": 1, "ticket": wire.b64(bytes(16)), "reply": rid, "b": [0] * n}
    for doc, word in ((fetch, "ticket"), (dict(fetch, version=99), "unknown-version"),
                      (dict(fetch, b=[0] * (n - 1)), "malformed"), (dict(fetch, b=[-1] * n), "malformed"),
                      (dict(fetch, version=True), "malformed"), (dict(fetch, list="a/b/c"), "malformed"), (dict(fetch, list="hl1/sha\\u0000"), "malformed")):
        topic, body = svc.answer_fetch(json.dumps(doc).encode())
        assert json.loads(body)["error"] == word, doc
    assert svc.stats.totals()["refused-malformed"] >= 10


def test_faulty_confirmer_fails_open(world):
    def broken(result):
        raise RuntimeError("boom")
    scanner = world["scanner"]
    reports = []
    policy = Policy(PolicySettings(), broken, scanner.confirm, lambda r, u: reports.append(r))
    d = PolicyInspector(lambda: scanner, policy).inspect(world["edited"])
    assert d.action == "allow" and reports == []

    class Exploding:
        def scan_bytes(self, *a, **k):
            raise MemoryError()
    d = PolicyInspector(lambda: Exploding(), policy).inspect(b"x")
    assert d.action == "allow" and d.reason.startswith("scan-error")


def _newer(lst):
    newer = lst.__class__.__new__(lst.__class__)
    newer.__dict__.update(lst.__dict__, version=lst.version + 1)
    return newer


def test_a_hub_without_the_devices_version_is_no_answer(mosquitto, world, tmp_path):
    """A hub that has not loaded the device's version yet must not refute (nor be cached)."""
    p = Pair(mosquitto, world, tmp_path, ttl=(100.0, 100.0))
    try:
        r = world["scanner"].scan_bytes(world["known"][0])
        sha_hit = [h for h in r.hits if h.list.signal == "sha256"][0]
        assert p.confirmer.ask(r._replace(hits=(sha_hit._replace(list=_newer(sha_hit.list)),))) == {}
        assert len(p.confirmer.cache) == 0 and p.confirmer.refused == 1
    finally:
        p.close()


def test_cache_does_not_outlive_a_list_update(mosquitto, world, tmp_path):
    """A negative answer cached for v1 must not refute a hit on v2 (which may hold the new entry)."""
    p = Pair(mosquitto, world, tmp_path, ttl=(100.0, 100.0))
    try:
        r = world["scanner"].scan_bytes(world["known"][0])
        sha_hit = [h for h in r.hits if h.list.signal == "sha256"][0]
        p.confirmer.ask(r._replace(hits=(sha_hit,)))
        n = p.confirmer.requests
        p.confirmer.ask(r._replace(hits=(sha_hit._replace(list=_newer(sha_hit.list)),)))
        assert p.confirmer.requests == n + 1  # asked again, not served from the v1 cache
    finally:
        p.close()


def test_unconfirmed_hits_are_asked_again_and_reported_only_if_confirmed(mosquitto, world, tmp_path):
    clock = Clock()
    dev = MqttClient(mosquitto.url, "dev-d").connect()
    reports = []
    try:
        confirmer = device_confirmer(dev, world["lists"], "dev-d", timeout=0.3, tokens=False)
        scanner = world["scanner"]
        policy = Policy(PolicySettings(reconfirm_hours=1), confirmer.ask, scanner.confirm,
                        lambda r, u: reports.append((r, u)), clock=clock)
        insp = PolicyInspector(lambda: scanner, policy)
        known = scanner.scan_bytes(world["known"][0])
        fake = known._replace(hits=tuple(h._replace(probes=((EXACT_BAND, bytes(32)),)) for h in known.hits
                                         if h.list.signal == "sha256"))
        assert insp.inspect(world["known"][0], url="http://origin.test/a.jpg").reason == "match-unconfirmed"
        assert insp.inspect(world["edited"], url="http://origin.test/b.jpg").reason == "unconfirmed-candidate"
        assert policy.decide(fake).reason == "match-unconfirmed"  # a Bloom false positive, say
        insp.inspect(world["unrelated"])
        assert reports == [] and policy.counters.pending == 3
        assert policy.reconfirm() == 0 and policy.counters.pending == 3  # hub still away
        hub = MqttClient(mosquitto.url, "hub-late").connect()
        assert ConfirmService(hub, Topics(), world["hub"].out).start().subscription.wait(5)
        try:
            confirmer.timeout = 3.0
            assert confirmer.refill_all() > 0  # what the token schedule does once the hub answers
            assert policy.reconfirm() == 2
        finally:
            hub.stop()
        assert sorted(u for _, u in reports) == ["http://origin.test/a.jpg", "http://origin.test/b.jpg"]
        assert all(r.best.confirmed for r, _ in reports)
        assert policy.counters.pending == 0 and policy.counters.reconfirmed == 2  # the fake was refuted
        # too old: given up, never reported (a probe not cached, while the hub is away again)
        other = known._replace(hits=tuple(h._replace(probes=((EXACT_BAND, b"\x11" * 32),)) for h in fake.hits))
        confirmer.timeout = 0.3
        assert policy.decide(other).reason == "match-unconfirmed"
        clock.t += 3601
        assert policy.reconfirm() == 0 and policy.counters.pending_dropped == 1 and len(reports) == 2
    finally:
        dev.stop()


def test_a_token_already_spent_costs_one_more_try_not_the_confirmation(mosquitto, world, tmp_path):
    """A token spent just before a power cut comes back from the wallet on disk: refused as spent,
    the device tries the next one and the hit is still confirmed."""
    p = Pair(mosquitto, world, tmp_path, ttl=(0.0, 0.0))
    try:
        tok = p.confirmer.wallet.take("hl1")
        key = next(k for k in p.services[0].keys.values() if k.source == "hl1")
        assert p.services[0].spent.redeem("hl1", key.token_sk, *tok) is None  # spent elsewhere
        p.confirmer.wallet._tokens["hl1"].insert(0, tok)  # and back at the front of the wallet
        r = world["scanner"].scan_bytes(world["known"][2])
        c = world["scanner"].confirm(r, p.confirmer.ask(r))
        assert c.verdict == "match" and p.confirmer.refused == 1
    finally:
        p.close()


def test_with_leases_a_token_is_accepted_only_on_the_partition_its_nonce_names(world):
    """Hub instances split partitions by leases and keep their own spent sets: a token must go to the
    partition its nonce names, so that a device cannot spend it once at every instance."""
    from agent.confirm import exchange

    svc = ConfirmService(None, Topics(), world["hub"].out, instance="hub-a")
    key = next(iter(svc.keys))
    tok = issue_tokens(svc, "hl1", 1)[0]
    own = exchange.eval_partition(Topics(), tok)
    req = {"v": 2, "key": key, "reply": "0" * 32, "token": {"n": wire.b64(tok[0]), "y": wire.b64(tok[1])},
           "e": [wire.b64(group.random_element()) for _ in range(wire.ELEMENTS)]}
    for other in ({*range(Topics().partitions)} - {own}) | {None}:
        assert json.loads(svc.answer_eval(json.dumps(req).encode(), other)[1])["error"] == "wrong-partition"
    assert "error" not in json.loads(svc.answer_eval(json.dumps(req).encode(), own)[1])
    assert json.loads(svc.answer_eval(json.dumps(req).encode(), own)[1])["error"] == "token-spent"
