"""Forwarding between hubs over HTTPS: routing by hosting country, copies to the list's source, signed
and checked messages, idempotent delivery, retries until acknowledged, decisions flowing back.

Three invented hotlines: A (NL), B (FR), C (DE). Hubs are in-process (HotlineHub + the real HTTPS
endpoint + the real forwarder); the end-to-end test with processes is test_two_hubs.py.
"""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.hub.hotline.hubs import TestHub
from tests.hub.hotline.kit import Network, report
from tests.waiting import free_port, wait_for
from tools.hotline import cases as C
from tools.hotline.signing import seal


@pytest.fixture
def net(tmp_path):
    return Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"], "hotline-c": ["DE"]},
                   ports={h: free_port() for h in ("hotline-a", "hotline-b", "hotline-c")})


@pytest.fixture
def hubs(net, tmp_path, dns):
    made = {}

    def make(hid, **kw):
        made[hid] = TestHub(net, hid, str(tmp_path / ("%s.sqlite" % hid)), dns=dns, **kw)
        return made[hid]
    yield make
    for h in made.values():
        h.close()


def post(net, hid, body: bytes):
    """POST raw bytes to a hub's endpoint; (status, answer)."""
    req = urllib.request.Request("https://127.0.0.1:%d/v1/cases" % net.ports[hid], data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=net.ca)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_case_goes_to_the_hosting_country_once_and_the_origin_keeps_its_copy(net, hubs):
    a = hubs("hotline-a", sources=["hotline-a"]).start()
    b = hubs("hotline-b").start()
    for i, dev in enumerate([b"d1"] * 30 + [b"d2", b"d3"]):  # one device floods, two more see it
        assert a.hub.ingest_report(report(i, device=dev))
    wait_for(lambda: not a.store.outbox() and b.store.count_cases() == 1, 15)
    got_a = a.store.cases()[0]
    got_b = b.store.case(got_a["id"])
    assert (got_a["country"], got_a["ip"], got_a["responsible"]) == ("FR", "80.67.169.12", "hotline-b")
    assert (got_b["country"], got_b["responsible"], got_b["origins"]) == ("FR", "hotline-b", ["hotline-a"])
    assert (got_b["sightings"], got_b["reports"]) == (3, 32) == (got_a["sightings"], got_a["reports"])
    assert got_b["url"] == "http://img.hosted-in-fr.test/k.jpg" and got_b["entry"] == "known-0"
    assert b.hub.stats["received"] >= 1 and b.hub.stats["refused"] == 0


def test_the_lists_source_gets_a_copy_and_a_home_country_case_stays(net, hubs):
    a = hubs("hotline-a", sources=["hotline-a", "hotline-c"]).start()
    b = hubs("hotline-b").start()
    c = hubs("hotline-c").start()
    a.hub.ingest_report(report(1, source="hotline-c"))                     # C's list, hosted in FR
    a.hub.ingest_report(report(2, host="cdn.hosted-in-nl.test"))           # A's list, hosted in NL (A's own)
    a.hub.ingest_report(report(3, host="nowhere.test"))                    # does not resolve: stays at A
    wait_for(lambda: not a.store.outbox() and b.store.count_cases() == 1 and c.store.count_cases() == 1, 15)
    assert {x["responsible"] for x in a.store.cases()} == {"hotline-b", "hotline-a", None}
    assert c.store.cases()[0]["source"] == "hotline-c" and c.store.cases()[0]["responsible"] == "hotline-b"


def test_forged_unknown_and_malformed_messages_are_refused_and_nothing_is_stored(net, hubs):
    b = hubs("hotline-b").start(forward=False)
    c0 = C.case_from_report(report(1), "80.67.169.12", "FR", "hotline-b")
    counts = {"sightings": 1, "reports": 1, "first_seen": "2027-01-15T08:00:00Z", "last_seen": "2027-01-15T08:00:00Z",
              "revision": 1}
    good = {"v": 1, "from": "hotline-a", "to": "hotline-b", "case": {k: c0[k] for k in C.CASE_FIELDS},
            "counts": counts, "status": None}

    def env(msg, hid="hotline-a", key_of=None):
        return json.dumps(seal(msg, net.key(key_of or hid))).encode()

    bad = [
        (env(good, key_of="hotline-c"), 403, "does not verify"),                       # forged: C's key as A
        (env(dict(good, **{"from": "hotline-z"}), key_of="hotline-c"), 403, "not a hotline"),  # unknown sender
        (env(dict(good, to="hotline-c")), 400, "addressed to"),
        (env(dict(good, case=dict(good["case"], id="0" * 32))), 400, "case id"),
        (env(dict(good, case=dict(good["case"], ip="192.168.1.5"))), 400, "local"),
        (env(dict(good, case=dict(good["case"], country="fr"))), 400, "country"),
        (env(dict(good, case=dict(good["case"], client="10.0.0.7"))), 400, "exactly the fields"),
        (env(dict(good, counts=dict(counts, sightings=5))), 400, "inconsistent"),
        (env(dict(good, counts=dict(counts, reports=-1))), 400, "whole number"),
        (env(dict(good, counts=dict(counts, reports="١"))), 400, "whole number"),
        (env(dict(good, status={"status": "gone"})), 400, "status"),
        (env(dict(good, v=2)), 400, "version"),
        (b"\xff\xfe not json", 400, "UTF-8 JSON"),
        (b"[]", 403, "not a hotline"),
        (json.dumps({"signed": good, "key_id": "x", "signature": "!!"}).encode(), 403, "base64"),
        (b"{" + b" " * 20000 + b"}", 413, "at most"),
    ]
    for body, status, text in bad:
        got = post(net, "hotline-b", body)
        assert got[0] == status and text in got[1]["error"], (got, text)
    assert b.store.count_cases() == 0 and b.store.outbox() == []
    assert post(net, "hotline-b", env(good)) == (200, {"ok": True, "case": c0["id"], "result": "new"})
    assert post(net, "hotline-b", env(good))[1]["result"] == "same"   # the same message twice: stored once
    assert b.store.count_cases() == 1 and b.store.case(c0["id"])["reports"] == 1


def test_forwarding_waits_for_a_hub_that_is_down_and_survives_restarts(net, hubs, tmp_path):
    a = hubs("hotline-a", sources=["hotline-a"]).start()
    for i in range(5):
        a.hub.ingest_report(report(i, device=b"d%d" % i))
    wait_for(lambda: any(o["attempts"] >= 2 for o in a.store.outbox()), 10)   # B is not there: retried
    a.close()                                                                 # A restarts with the outbox
    a = hubs("hotline-a", sources=["hotline-a"]).start()
    assert len(a.store.outbox()) == 1
    b = hubs("hotline-b").start()
    wait_for(lambda: not a.store.outbox(), 15)
    assert b.store.cases()[0]["sightings"] == 5
    b.close()                                                                 # B restarts: its state is kept
    b = hubs("hotline-b").start()
    a.hub.ingest_report(report(99, device=b"d99"))
    wait_for(lambda: not a.store.outbox() and b.store.cases()[0]["sightings"] == 6, 15)
    assert b.store.count_cases() == 1 and b.store.cases()[0]["reports"] == 6


def test_decisions_flow_back_and_a_rejection_feeds_the_sources_allow_input(net, hubs):
    rejected = []
    a = hubs("hotline-a", sources=["hotline-a"], on_reject=rejected.append).start()
    b = hubs("hotline-b").start()
    a.hub.ingest_report(report(1))
    a.hub.ingest_report(report(2, path="other.jpg"))
    wait_for(lambda: b.store.count_cases() == 2 and not a.store.outbox(), 15)
    first, second = sorted(b.store.cases(), key=lambda c: c["url"])
    with pytest.raises(Exception, match="for hotline-b to decide"):
        a.hub.decide(first["id"], "confirm", "alice")                        # not A's country
    b.hub.decide(first["id"], "confirm", "bob")
    b.hub.decide(first["id"], "removed", "bob")
    b.hub.decide(second["id"], "reject", "bob")
    wait_for(lambda: a.store.case(first["id"])["status"] == "removed" and not b.store.outbox(), 15)
    got = a.store.case(first["id"])
    assert got["takedown_at"] and got["removed_at"] and got["status_by"] == "hotline-b"
    wait_for(lambda: a.store.case(second["id"])["status"] == "rejected", 15)
    assert [c["id"] for c in rejected] == [second["id"]]


def test_a_silent_client_does_not_stop_the_endpoint(net, hubs, monkeypatch):
    import socket
    from tools.hotline.serve import Listener
    monkeypatch.setattr(Listener, "CLIENT_TIMEOUT", 1)
    hubs("hotline-b").start(forward=False)
    idle = [socket.create_connection(("127.0.0.1", net.ports["hotline-b"])) for _ in range(20)]  # never speak
    try:
        status, answer = post(net, "hotline-b", b"{}")
        assert status == 403 and "not a hotline" in answer["error"]          # still served, and refused
    finally:
        for s in idle:
            s.close()
