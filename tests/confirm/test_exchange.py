"""agent.confirm.exchange without any transport: the messages of one round and one token batch
against an in-process ConfirmService, and what each check refuses.

The agent's Confirmer and the fleet simulator both build and check their messages here; these
tests pin the module's own contract (the MQTT paths are tests/confirm/test_confirm.py's).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from agent.confirm import exchange, group, oprf, tokens, wire
from agent.confirm.client import sealed_section
from agent.confirm.sealed import EXACT_BAND
from agent.core.errors import ConfirmError
from agent.lists.store import load_folder
from agent.mqtt import Topics
from tests.listkit import Hub, issue_tokens, random_entries
from tools.confirm_service import ConfirmService

RID = "ab" * 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    hub = Hub(tmp_path_factory.mktemp("exchange") / "hub")
    known = random_entries(200, 3)
    hub.build(known)
    lst = next(iter(load_folder(hub.out, hub.trust()).lists.values()))
    return {"hub": hub, "known": known, "lst": lst, "svc": ConfirmService(None, Topics(), hub.out)}


def _round(setup, probes):
    """(round, fetch answer doc) after a full exchange with the in-process hub."""
    lst, svc = setup["lst"], setup["svc"]
    rnd = exchange.Round(lst, sealed_section(lst), probes)
    req = rnd.eval_request(issue_tokens(svc, lst.source, 1)[0], RID)
    _topic, ans = svc.answer_eval(wire.dumps(req))
    doc, err = exchange.read_answer(ans, RID)
    assert err is None
    assert rnd.eval_answer(doc) == (svc.ttl[0], svc.ttl[1])
    _topic, ans = svc.answer_fetch(wire.dumps(rnd.fetch_request(RID)))
    return rnd, exchange.read_answer(ans, RID)[0]


def test_a_round_opens_exactly_the_listed_entry(setup):
    known = setup["known"]
    miss = (EXACT_BAND, hashlib.sha256(b"unlisted").digest())
    rnd, doc = _round(setup, [miss, (EXACT_BAND, known[7].hash)])
    opened = rnd.fetch_answer(doc)
    assert opened[miss] == [] and [(e.id, e.hash) for e in opened[(EXACT_BAND, known[7].hash)]] == \
        [(known[7].id, known[7].hash)]
    rnd, doc = _round(setup, [miss])
    assert rnd.fetch_answer(doc) == {miss: []}


def test_requests_are_padded_and_name_no_device(setup):
    lst = setup["lst"]
    rnd = exchange.Round(lst, sealed_section(lst), [(EXACT_BAND, setup["known"][0].hash)])
    ev = rnd.eval_request((bytes(32), bytes(64)), RID)
    assert sorted(ev) == ["e", "key", "reply", "token", "v"] and len(ev["e"]) == wire.ELEMENTS
    assert all(group.is_element(base64.b64decode(e)) for e in ev["e"])
    rnd.outputs, rnd.ticket = [bytes(64)], bytes(16)  # as if evaluated: only the shape matters here
    fe = rnd.fetch_request(RID)
    assert sorted(fe) == ["b", "list", "reply", "ticket", "v", "version"] and len(fe["b"]) == wire.BUCKETS_PER_FETCH
    with pytest.raises(ValueError):
        exchange.Round(lst, sealed_section(lst), [])
    with pytest.raises(ValueError):
        exchange.Round(lst, sealed_section(lst), [(EXACT_BAND, bytes(32))] * (wire.ELEMENTS + 1))


def test_forged_buckets_and_foreign_answers_are_refused(setup):
    known = setup["known"]
    rnd, doc = _round(setup, [(EXACT_BAND, known[1].hash)])
    forged = json.loads(json.dumps(doc))
    for b in forged["buckets"]:
        raw = bytearray(base64.b64decode(b["data"]))
        if raw:  # (the bucket of the listed entry holds its record at least)
            raw[-1] ^= 1
        b["data"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ConfirmError, match="commitment"):
        rnd.fetch_answer(forged)
    short = dict(doc, buckets=[dict(b, proof=b["proof"][:-1]) for b in doc["buckets"]])
    with pytest.raises(ConfirmError):
        rnd.fetch_answer(short)
    with pytest.raises(ConfirmError, match="another request"):
        exchange.read_answer(wire.dumps(dict(doc, reply="cd" * 16)), RID)
    with pytest.raises(ConfirmError):
        exchange.read_answer(b"\xff not json", RID)
    assert exchange.read_answer(wire.error_answer(RID, "busy"), RID)[1] == "busy"
    with pytest.raises(ConfirmError, match="ttl"):
        fresh = exchange.Round(setup["lst"], sealed_section(setup["lst"]), [(EXACT_BAND, known[2].hash)])
        fresh.eval_answer({"v": 2, "reply": RID, "e": [wire.b64(group.random_element()) for _ in range(4)],
                           "ticket": wire.b64(bytes(16)), "ttl": [-1, 5]})


def test_token_batches_are_checked_against_the_signed_key(setup):
    lst, svc = setup["lst"], setup["svc"]
    pk = bytes.fromhex(sealed_section(lst)["tokens"])
    t = Topics()
    assert exchange.token_partition(t, "gw-0001") == exchange.token_partition(t, "gw-0001")
    assert 0 <= exchange.token_partition(t, "gw-0001") < t.partitions
    batch = tokens.Issuance(lst.source, 8, tokens.epoch_of(svc.clock()))
    req = exchange.token_request(batch, RID)
    assert sorted(req) == ["e", "reply", "source", "v"] and len(req["e"]) == 8
    _topic, ans = svc.answer_tokens("gw-0001", wire.dumps(req))
    doc = exchange.read_answer(ans, RID)[0]
    got = exchange.token_answer(batch, doc, pk)
    assert len(got) == 8 and all(svc.spent.redeem(lst.source, next(iter(svc.keys.values())).token_sk, n, y) is None
                                 for n, y in got)
    # the same answer under a key the manifest does not name: refused (a hub marking one device's tokens)
    other_pk = oprf.generate_key_pair()[1]
    with pytest.raises(ConfirmError, match="proof"):
        exchange.token_answer(batch, doc, other_pk)
    with pytest.raises(ConfirmError):
        exchange.token_answer(batch, dict(doc, e=doc["e"][:-1]), pk)
