"""Hub confirmation over a real mosquitto: answers, caching, shared subscriptions, policy decisions."""

from __future__ import annotations

import hashlib
import json
import pytest

from agent.confirm.client import ConfirmCache, Confirmer
from agent.hashing.imaging import hash_image
from agent.confirm.wire import Entry
from agent.lists.store import load_folder
from agent.lists.trust import TrustStore
from agent.mqtt import MqttClient, Topics
from agent.policy import Policy, PolicyInspector, PolicySettings
from agent.hashing.samples import encode, generate_image, transform
from agent.matching.scanner import Scanner
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, wait_for
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
        self.confirmer = Confirmer(self.dev, Topics(), "dev-a", timeout=3.0, cache=cache).start()

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
        assert totals["hl1/sha"][2] >= 1  # positive keys counted, nothing about the device stored
    finally:
        p.close()


def test_request_carries_only_short_keys(mosquitto, world, tmp_path):
    seen = []
    with MqttClient(mosquitto.url, "spy") as spy:
        spy.subscribe(Topics().confirm_req_filter(), lambda m: seen.append(m.payload)).wait(5)
        p = Pair(mosquitto, world, tmp_path)
        try:
            e = world["scanner"].scan_bytes(world["edited"])
            p.confirmer.ask(e)
            wait_for(lambda: seen)
        finally:
            p.close()
    req = json.loads(seen[0])
    text = seen[0].decode()
    assert set(req) == {"v", "id", "client", "lists"}
    assert e.hashes.pdq.hex() not in text  # never the perceptual hash itself
    for ident, asked in req["lists"].items():
        for key in asked["keys"]:
            assert len(key.split(":")[-1]) <= 16, key


def test_answers_cached_for_the_hub_durations(mosquitto, world, tmp_path):
    clock = Clock()
    p = Pair(mosquitto, world, tmp_path, ttl=(100.0, 10.0), clock=clock)
    try:
        scanner = world["scanner"]
        known = scanner.scan_bytes(world["known"][0])
        p.confirmer.ask(known)
        assert p.confirmer.requests == 1
        p.confirmer.ask(known)
        assert p.confirmer.requests == 1  # positive answer served from the cache
        clock.t += 101
        p.confirmer.ask(known)
        assert p.confirmer.requests == 2  # positive expired after ttl_positive
        # a hit whose key the hub does not hold gets a negative answer, cached for ttl_negative
        fake = known._replace(hits=(known.hits[0]._replace(keys=("sha256:00000000",)),))
        answered = p.confirmer.ask(fake)
        assert answered["hl1/sha"].lookup("sha256:00000000") == []
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
    p = Pair(mosquitto, world, tmp_path, services=2, ttl=(0.0, 0.0))
    try:
        r = world["scanner"].scan_bytes(world["known"][2])
        for _ in range(20):
            assert "hl1/sha" in p.confirmer.ask(r)
        counts = [s.answered for s in p.services]
        assert sum(counts) == 20  # each request answered exactly once
        assert all(c > 0 for c in counts), counts
    finally:
        p.close()


def test_hub_unreachable_policy_without_reports(mosquitto, world):
    dev = MqttClient(mosquitto.url, "dev-b").connect()
    reports = []
    try:
        confirmer = Confirmer(dev, Topics(), "dev-b", timeout=0.3).start()
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
        assert confirmer.timeouts == 2
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
    for bad in (b"", b"[]", b'{"v":1}', b'{"v":1,"id":"a/b","client":"c","lists":{}}',
                b'{"v":2,"id":"a","client":"c","lists":{}}', b'{"v":1,"id":"a","client":"#","lists":{}}'):
        assert svc.answer(bad) is None, bad
    topic, body = svc.answer(b'{"v":1,"id":"r1","client":"c1","lists":{"nope/x":{"keys":["a"]}}}')
    assert topic == "gatewatch/v1/confirm/resp/c1/r1" and json.loads(body)["lists"] == {}


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


def test_answer_from_an_older_hub_version_is_no_answer(mosquitto, world):
    """A hub that has not loaded the device's version yet must not refute (nor be cached)."""
    topics = Topics()
    hub = MqttClient(mosquitto.url, "stale-hub").connect()
    dev = MqttClient(mosquitto.url, "dev-c").connect()
    try:
        def stale(msg):
            req = json.loads(msg.payload)
            lists = {k: {"version": a["version"] - 1, "entries": {key: [] for key in a["keys"]}}
                     for k, a in req["lists"].items()}
            hub.publish(topics.confirm_resp(req["client"], req["id"]),
                        json.dumps({"v": 1, "id": req["id"], "ttl_positive": 60, "ttl_negative": 60,
                                    "lists": lists}).encode(), qos=1)
        hub.subscribe(topics.confirm_req_filter(), stale).wait(5)
        confirmer = Confirmer(dev, topics, "dev-c", timeout=3.0).start()
        r = world["scanner"].scan_bytes(world["known"][0])
        assert confirmer.ask(r) == {}
        assert len(confirmer.cache) == 0
    finally:
        dev.stop()
        hub.stop()


def test_cache_does_not_outlive_a_list_update(mosquitto, world, tmp_path):
    """A negative answer cached for v1 must not refute a hit on v2 (which may hold the new entry)."""
    p = Pair(mosquitto, world, tmp_path, ttl=(100.0, 100.0))
    try:
        r = world["scanner"].scan_bytes(world["known"][0])
        sha_hit = [h for h in r.hits if h.list.signal == "sha256"][0]
        p.confirmer.ask(r._replace(hits=(sha_hit,)))
        n = p.confirmer.requests
        newer = sha_hit.list.__class__.__new__(sha_hit.list.__class__)
        newer.__dict__.update(sha_hit.list.__dict__, version=sha_hit.list.version + 1)
        p.confirmer.ask(r._replace(hits=(sha_hit._replace(list=newer),)))
        assert p.confirmer.requests == n + 1  # asked again, not served from the v1 cache
    finally:
        p.close()


def test_unconfirmed_hits_are_asked_again_and_reported_only_if_confirmed(mosquitto, world, tmp_path):
    clock = Clock()
    dev = MqttClient(mosquitto.url, "dev-d").connect()
    reports = []
    try:
        confirmer = Confirmer(dev, Topics(), "dev-d", timeout=0.3).start()
        scanner = world["scanner"]
        policy = Policy(PolicySettings(reconfirm_hours=1), confirmer.ask, scanner.confirm,
                        lambda r, u: reports.append((r, u)), clock=clock)
        insp = PolicyInspector(lambda: scanner, policy)
        known = scanner.scan_bytes(world["known"][0])
        fake = known._replace(hits=tuple(h._replace(keys=("sha256:00000000",)) for h in known.hits
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
            assert policy.reconfirm() == 2
        finally:
            hub.stop()
        assert sorted(u for _, u in reports) == ["http://origin.test/a.jpg", "http://origin.test/b.jpg"]
        assert all(r.best.confirmed for r, _ in reports)
        assert policy.counters.pending == 0 and policy.counters.reconfirmed == 2  # the fake was refuted
        # too old: given up, never reported (a key not cached, while the hub is away again)
        other = known._replace(hits=tuple(h._replace(keys=("sha256:11111111",)) for h in fake.hits))
        assert policy.decide(other).reason == "match-unconfirmed"
        clock.t += 3601
        assert policy.reconfirm() == 0 and policy.counters.pending_dropped == 1 and len(reports) == 2
    finally:
        dev.stop()
