"""The hub's signed timestamp on the device: freshness, catching up, rollback floors, bad input.

No broker: the updater is driven directly (``handle_timestamp``, ``handle``) with an injected clock
and a fetcher that hands out the published bytes. Lists are random digests only.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil

import pytest

from agent.lists.store import ListStore
from agent.lists.trust import TrustStore
from agent.mqtt import Message, Topics
from agent.updates import timestamp as tsf
from agent.updates.updater import Updater
from tests.listkit import Hub, random_entries, wait_for
from tools.publish import BuiltList, Plan, TimestampSigner

T0 = 1_800_000_000.0
HOUR = 3600.0
IDENT = "hl1/sha"
TOPICS = Topics()
TS_TOPIC = TOPICS.timestamp("hl1")
MANIFEST = TOPICS.manifest("hl1", "sha")


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


class FakeClient:
    """Records subscriptions; no network."""

    def __init__(self):
        self.subscribed = []

    def subscribe(self, topic_filter, callback, qos=1):
        self.subscribed.append(topic_filter)

    def unsubscribe(self, topic_filter):
        pass


class PlanFetcher:
    """Stands in for the broker's chunks: the bytes the hub published; ``fail`` first fetches fail."""

    def __init__(self, plans, fail=0):
        self.plans = {p.newest.version: p for p in plans}
        self.fail = fail

    def fetch(self, base, part, chunk_size, what):
        from agent.updates.updater import UpdateRefused
        if self.fail:
            self.fail -= 1
            raise UpdateRefused("chunk 0 of 1 missing", transient=True)
        # <p>/lists/<source>/<list>/v<N>/snapshot, or <p>/lists/<source>/<list>/delta/<M>-<N>
        version = int(base.split("/")[-2][1:]) if what == "snapshot" else int(base.rsplit("-", 1)[1])
        plan = self.plans[version]
        return plan.delta if what == "delta" else plan.newest.data


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(tmp_path_factory.mktemp("hub"))
    h.v1 = h.build(random_entries(300, 1), now=T0 - HOUR)
    h.v2 = h.build(random_entries(300, 1) + random_entries(30, 2), now=T0 - HOUR)
    h.v3 = h.build(random_entries(300, 1) + random_entries(60, 2), now=T0 - HOUR)
    h.signer = TimestampSigner("hl1", h.key)
    h.plans = [Plan(BuiltList.load(h.v1), None, 65536), Plan(BuiltList.load(h.v2), BuiltList.load(h.v1), 65536),
               Plan(BuiltList.load(h.v3), BuiltList.load(h.v2), 65536)]
    return h


def announcement(hub, version):
    return json.dumps(hub.plans[version - 1].announcement()).encode()


def make_device(tmp_path, hub, clock, held=(), name="dev", fail=0, client=None, trust=None):
    lists = tmp_path / name / "lists"
    os.makedirs(lists, exist_ok=True)
    for p in held:
        shutil.copy(p, lists)
    store = ListStore(str(lists), trust or hub.trust(), clock=clock)
    swaps = []
    up = Updater(client, TOPICS, store, on_lists=lambda d: swaps.append(dict(d)), retry=(30.0, 60.0))
    up.fetcher = PlanFetcher(hub.plans, fail=fail)
    up.swaps = swaps
    return up


def sign(hub, lists, now, **kw):
    signer = kw.pop("signer", hub.signer)
    return signer.sign(lists, now)


def forge(key, doc=None, text=None, **over):
    """A timestamp message whose signed text is ``text`` (or ``doc`` with ``over``), really signed by
    ``key``: only the defect under test is wrong."""
    if text is None:
        d = {"type": tsf.TYPE, "format": 1, "source": "hl1", "seq": 5, "issued": int(T0), "expires": int(T0 + 8 * HOUR),
             "key_id": "00ff", "lists": {"sha": 1}}
        d.update(doc or {})
        d.update(over)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    raw = text.encode("utf-8")
    return json.dumps({"schema": 1, "signed": text,
                       "signature": base64.b64encode(key.sign(tsf.signed_message(raw))).decode()}).encode()


# ----------------------------------------------------------------------------- freshness

def test_timestamp_accepted_and_shown_in_status(tmp_path, hub):
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1])
    assert up.handle_timestamp(sign(hub, {"sha": 1}, T0), TS_TOPIC) == "accepted"
    st = up.snapshot()[IDENT]
    assert st["last_timestamp"] == int(T0) and st["timestamp_version"] == 1
    assert st["stale"] is False and st["behind"] is False and st["timestamp_refusal"] is None
    assert up.check_freshness()["fault"] is False


def test_frozen_broker_is_noticed_after_stale_hours(tmp_path, hub):
    """The broker keeps serving the same (genuine) manifest and timestamp, never a newer one."""
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1])
    frozen = sign(hub, {"sha": 1}, T0)
    assert up.handle_timestamp(frozen, TS_TOPIC) == "accepted"
    clock.t = T0 + 5 * HOUR
    assert up.handle_timestamp(frozen, TS_TOPIC) == "current"  # re-delivered on reconnect: no fresh word
    assert up.check_freshness(stale_after=6 * HOUR)["stale"] == []
    clock.t = T0 + 6 * HOUR + 1
    assert up.handle_timestamp(frozen, TS_TOPIC) == "current"
    fresh = up.check_freshness(stale_after=6 * HOUR)
    assert fresh["stale"] == ["hl1"] and fresh["fault"] is True
    st = up.snapshot()[IDENT]
    assert st["stale"] is True and st["last_timestamp"] == int(T0)
    assert up.lists[IDENT].version == 1  # the list stays in force: stale is a warning, not a refusal
    # the hub's next refresh gets through: fresh again
    assert up.handle_timestamp(sign(hub, {"sha": 1}, clock.t), TS_TOPIC) == "accepted"
    assert up.check_freshness()["stale"] == [] and up.snapshot()[IDENT]["stale"] is False


def test_no_timestamp_at_all_is_stale_after_stale_hours(tmp_path, hub):
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1])
    assert up.check_freshness(stale_after=6 * HOUR)["stale"] == []
    clock.t = T0 + 6 * HOUR + 1
    assert up.check_freshness()["stale"] == ["hl1"]
    assert up.check_freshness(stale_after=0)["stale"] == []  # lists.stale_hours = 0: off


def test_timestamp_naming_a_newer_version_retries_its_announcement_now(tmp_path, hub):
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1], fail=2).start()  # delta, then snapshot
    try:
        up._on_manifest(Message(MANIFEST, announcement(hub, 2), 1, True))
        assert up.wait_idle(5)
        assert up.lists[IDENT].version == 1 and MANIFEST in up._retries  # waiting 30 s to try again
        up._on_timestamp(Message(TS_TOPIC, sign(hub, {"sha": 2}, T0), 1, True))
        wait_for(lambda: up.lists[IDENT].version == 2, 5)
        st = up.snapshot()[IDENT]
        assert st["behind"] is False and st["timestamp_version"] == 2
    finally:
        up.stop()


def test_timestamp_naming_an_unannounced_version_marks_behind_and_asks_again(tmp_path, hub):
    clock = Clock()
    client = FakeClient()
    up = make_device(tmp_path, hub, clock, held=[hub.v1], client=client)
    up.handle(announcement(hub, 1), MANIFEST)
    asked = client.subscribed.count(up._manifest_filter())
    assert up.handle_timestamp(sign(hub, {"sha": 3}, T0), TS_TOPIC) == "accepted"
    st = up.snapshot()[IDENT]
    assert st["behind"] is True and st["version"] == 1 and st["timestamp_version"] == 3
    assert client.subscribed.count(up._manifest_filter()) == asked + 1  # retained manifests again
    assert up.handle_timestamp(sign(hub, {"sha": 3}, T0 + 300), TS_TOPIC) == "accepted"
    assert client.subscribed.count(up._manifest_filter()) == asked + 1  # once per version


# ----------------------------------------------------------------------------- rollback

def test_lists_wipe_does_not_reopen_rollback(tmp_path, hub):
    clock = Clock()
    up = make_device(tmp_path, hub, clock)
    assert up.handle(announcement(hub, 2), MANIFEST) == "installed"
    record = json.loads((tmp_path / "dev" / "versions.json").read_text())
    assert record["lists"] == {IDENT: 2}
    shutil.rmtree(tmp_path / "dev" / "lists")  # the lists folder is wiped; versions.json is beside it
    up = make_device(tmp_path, hub, clock)
    assert up.lists == {}
    assert up.handle(announcement(hub, 1), MANIFEST) == "refused"
    assert "older than v2 already accepted on this device" in up.status[IDENT].last_refusal["reason"]
    assert up.lists == {} and up.status[IDENT].bytes_downloaded == 0
    # the version it had is fine again, and newer ones too
    assert up.handle(announcement(hub, 2), MANIFEST) == "installed"
    assert up.handle(announcement(hub, 3), MANIFEST) == "installed"
    assert json.loads((tmp_path / "dev" / "versions.json").read_text())["lists"] == {IDENT: 3}


def test_timestamp_bounds_acceptance_even_without_a_record(tmp_path, hub):
    """A factory reset loses versions.json too; a fresh signed timestamp still names the current version."""
    clock = Clock()
    up = make_device(tmp_path, hub, clock)
    assert up.handle_timestamp(sign(hub, {"sha": 2}, T0), TS_TOPIC) == "accepted"
    assert up.handle(announcement(hub, 1), MANIFEST) == "refused"
    assert "named by the hub's signed timestamp" in up.status[IDENT].last_refusal["reason"]
    assert up.handle(announcement(hub, 2), MANIFEST) == "installed"


def test_last_timestamp_survives_a_restart_and_its_replay_is_refused(tmp_path, hub):
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1])
    old = sign(hub, {"sha": 1}, T0)
    new = sign(hub, {"sha": 2}, T0 + 60)
    assert up.handle_timestamp(old, TS_TOPIC) == "accepted"
    assert up.handle_timestamp(new, TS_TOPIC) == "accepted"
    up = make_device(tmp_path, hub, clock, held=[hub.v1])  # restart
    assert up.snapshot()[IDENT]["timestamp_version"] == 2
    assert up.handle_timestamp(old, TS_TOPIC) == "refused"
    assert "replay refused" in up.timestamp_refusals["hl1"]["reason"]


def test_malformed_version_record_is_logged_and_read_as_empty(tmp_path, hub, caplog):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "versions.json").write_text('{"format": 1, "lists": {"hl1/sha": "9"}}')
    with caplog.at_level(logging.WARNING):
        up = make_device(tmp_path, hub, Clock(), held=[hub.v1])
    assert "malformed" in up.record.problem and "malformed" in caplog.text
    assert up.record.floor(IDENT) == 1  # the list held counts


# ----------------------------------------------------------------------------- bad input

def _digits(text):
    return text.replace('"seq":5', '"seq":\u0665')  # ARABIC-INDIC DIGIT FIVE


BAD = [
    ("bad signature", lambda h, k, o: _flip_signature(forge(k)), "signature does not verify"),
    ("seq is a string", lambda h, k, o: forge(k, seq="7"), "'seq' must be a whole number"),
    ("seq is true", lambda h, k, o: forge(k, seq=True), "'seq' must be a whole number"),
    ("seq is a float", lambda h, k, o: forge(k, seq=6.0), "'seq' must be a whole number"),
    ("huge seq", lambda h, k, o: forge(k, seq=1 << 60), "'seq' must be a whole number"),
    ("huge expiry", lambda h, k, o: forge(k, expires=10 ** 30), "'expires' must be a whole number"),
    ("5000-digit number", lambda h, k, o: forge(k, text=forge_text(seq="9" * 5000)), "not JSON"),
    ("non-ASCII digits", lambda h, k, o: forge(k, text=_digits(forge_text())), "ASCII"),
    ("version 0", lambda h, k, o: forge(k, lists={"sha": 0}), "version of list 'sha'"),
    ("version a string", lambda h, k, o: forge(k, lists={"sha": "2"}), "version of list 'sha'"),
    ("lists a list", lambda h, k, o: forge(k, lists=["sha"]), "lists must be an object"),
    ("bad list name", lambda h, k, o: forge(k, lists={"../x": 2}), "names are invalid"),
    ("extra field", lambda h, k, o: forge(k, extra=1), "exactly the fields"),
    ("not canonical", lambda h, k, o: forge(k, text=forge_text().replace(",", ", ")), "canonical"),
    ("another type", lambda h, k, o: forge(k, type="gatewatch-list"), "not a gatewatch timestamp"),
    ("expired", lambda h, k, o: forge(k, issued=int(T0 - 9 * HOUR), expires=int(T0 - HOUR)), "expired"),
    ("issued in the future", lambda h, k, o: forge(k, issued=int(T0 + HOUR), expires=int(T0 + 9 * HOUR)), "future"),
    ("another source's key", lambda h, k, o: forge(o), "signature does not verify with any trusted key of 'hl1'"),
    ("another source's timestamp on this topic", lambda h, k, o: forge(o, source="hl2"), "topic of source 'hl1'"),
    ("not JSON", lambda h, k, o: b"\xff\xfe garbage", "not JSON"),
    ("outer fields", lambda h, k, o: b'{"schema":1,"signed":"{}"}', "exactly schema"),
    ("schema 2", lambda h, k, o: json.dumps(dict(json.loads(forge(k)), schema=2)).encode(), "schema 2"),
    ("signature not base64", lambda h, k, o: json.dumps(dict(json.loads(forge(k)), signature="***")).encode(),
     "not base64"),
    ("oversized", lambda h, k, o: b" " * (tsf.MAX_PAYLOAD + 1), "larger than"),
    ("a list signature", lambda h, k, o: _list_signature_as_timestamp(k), "signature does not verify"),
]


def forge_text(**over):
    d = {"type": tsf.TYPE, "format": 1, "source": "hl1", "seq": 5, "issued": int(T0), "expires": int(T0 + 8 * HOUR),
         "key_id": "00ff", "lists": {"sha": 1}}
    d.update(over)
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return text.replace('"%s"' % over["seq"], over["seq"]) if isinstance(over.get("seq"), str) and \
        over["seq"].isdigit() and len(over["seq"]) > 100 else text


def _flip_signature(payload):
    doc = json.loads(payload)
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[0] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(doc).encode()


def _list_signature_as_timestamp(key):
    """A signature the key made over list-file bytes (magic GWL1) presented as a timestamp's."""
    from agent.core import listfile
    text = forge_text()
    sig = key.sign(listfile.signed_part(text.encode()))
    return json.dumps({"schema": 1, "signed": text, "signature": base64.b64encode(sig).decode()}).encode()


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    return Hub(tmp_path_factory.mktemp("other"), source="hl2", key_name="hl2")


@pytest.mark.parametrize("what,make,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_timestamps_are_refused_and_change_nothing(tmp_path, hub, other, what, make, reason, caplog):
    trust = TrustStore.from_specs([hub.pub_path, other.pub_path])  # hl2 is trusted, for its own lists
    clock = Clock()
    up = make_device(tmp_path, hub, clock, held=[hub.v1], trust=trust)
    good = sign(hub, {"sha": 1}, T0 - 60)
    assert up.handle_timestamp(good, TS_TOPIC) == "accepted"
    record = (tmp_path / "dev" / "versions.json").read_bytes()
    before = up.snapshot()
    with caplog.at_level(logging.WARNING):
        assert up.handle_timestamp(make(hub, hub.key, other.key), TS_TOPIC) == "refused"
    refusal = up.timestamp_refusals["hl1"]["reason"]
    assert reason in refusal, refusal
    assert "refused" in caplog.text and reason in caplog.text
    assert up.timestamps["hl1"].payload == good  # nothing changed
    assert (tmp_path / "dev" / "versions.json").read_bytes() == record
    after = up.snapshot()
    assert after[IDENT]["timestamp_refusal"]["reason"] == refusal
    for d in (before, after):
        d[IDENT].pop("timestamp_refusal")
    assert after == before
    assert up.lists[IDENT].version == 1 and "hl2" not in up.timestamps


def test_replayed_older_timestamp_is_refused(tmp_path, hub):
    up = make_device(tmp_path, hub, Clock(), held=[hub.v1])
    old = sign(hub, {"sha": 1}, T0 - 120)
    new = sign(hub, {"sha": 1}, T0 - 60)
    assert up.handle_timestamp(new, TS_TOPIC) == "accepted"
    assert up.handle_timestamp(old, TS_TOPIC) == "refused"
    assert "not newer than seq" in up.timestamp_refusals["hl1"]["reason"]
    assert up.timestamps["hl1"].payload == new


def test_untrusted_source_timestamps_are_ignored(tmp_path, hub, other):
    up = make_device(tmp_path, hub, Clock(), held=[hub.v1])
    up._on_timestamp(Message(TOPICS.timestamp("hl2"), TimestampSigner("hl2", other.key).sign({"x": 1}, T0), 1, True))
    assert up._pending == {} and up.timestamp_refusals == {}


def test_hub_seq_only_grows_even_when_its_clock_steps_back(hub):
    signer = TimestampSigner("hl1", hub.key)
    a = tsf.parse_payload(signer.sign({"sha": 1}, T0))[2]["seq"]
    b = tsf.parse_payload(signer.sign({"sha": 1}, T0 - 3600))[2]["seq"]
    assert b == a + 1
