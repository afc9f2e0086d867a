"""List distribution against a real mosquitto: snapshot, delta, and every refusal with its reason."""

from __future__ import annotations

import base64
import json
import os

import pytest

from agent.lists.trust import TrustStore
from agent.mqtt import MqttClient, Topics
from agent.lists.store import ListStore
from agent.updates.updater import Updater
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, only, random_entries, wait_for
from tools.publish import publish_lists

CHUNK = 4096
IDENT = "hl1/sha"


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path / "hub")
    h.v1 = h.build(random_entries(1500, 1))
    h.v2 = h.build(random_entries(1500, 1) + random_entries(100, 2))
    return h


class Device:
    """A device: its own client, state folder and updater."""

    def __init__(self, broker, tmp_path, trust: TrustStore, name="dev1", max_bytes=64 << 20, held=(),
                 retry=(30.0, 60.0)):
        self.store = ListStore(str(tmp_path / name / "lists"), trust, max_bytes=max_bytes)
        for p in held:
            with open(p, "rb") as f:
                data = f.read()
            with open(os.path.join(self.store.directory, os.path.basename(p)), "wb") as f:
                f.write(data)
        self.client = MqttClient(broker.url, name).connect()
        self.updater = Updater(self.client, Topics(), self.store, fetch_timeout=2.0, retry=retry).start()

    def status(self):
        return self.updater.status.get(IDENT)

    def wait_outcome(self, announced, timeout=15.0):
        """Wait until the updater handled the announcement of ``announced``."""
        def done():
            st = self.status()
            if st is None or st.announced != announced:
                return False
            return (st.version == announced or st.last_refusal is not None) and self.updater.idle.is_set()
        wait_for(done, timeout)
        return self.status()

    def close(self):
        self.updater.stop()
        self.client.stop()


def publish(broker, folder, **kw):
    with MqttClient(broker.url, "publisher") as c:
        return publish_lists(c, Topics(), folder, chunk_size=CHUNK, **kw)


def raw_publish(broker, topic, payload):
    with MqttClient(broker.url, "attacker") as c:
        assert c.publish(topic, payload, qos=1, retain=True).wait(5)


def assert_kept(dev, version, reason_part):
    st = dev.status()
    assert st.version == version
    assert st.last_refusal is not None, "no refusal recorded"
    assert reason_part in st.last_refusal["reason"], st.last_refusal["reason"]
    if version is None:
        assert IDENT not in dev.updater.lists
        assert dev.store.load() == {}
    else:
        assert dev.updater.lists[IDENT].version == version
        assert dev.store.load()[IDENT].version == version


def test_new_device_gets_snapshot(mosquitto, hub, tmp_path):
    anns = publish(mosquitto, only([hub.v1], tmp_path / "p1"))
    dev = Device(mosquitto, tmp_path, hub.trust())
    try:
        st = dev.wait_outcome(1)
        assert (st.version, st.via, st.last_refusal) == (1, "snapshot", None)
        assert st.bytes_downloaded == anns[0]["size"] == os.path.getsize(hub.v1)
        assert dev.store.load()[IDENT].version == 1
    finally:
        dev.close()


def test_one_behind_gets_only_the_delta_and_a_new_device_the_snapshot(mosquitto, hub, tmp_path):
    anns = publish(mosquitto, only([hub.v1, hub.v2], tmp_path / "p"))
    ann = anns[0]
    assert ann["version"] == 2 and ann["deltas"][0]["from"] == 1
    old = Device(mosquitto, tmp_path, hub.trust(), "old", held=[hub.v1])
    new = Device(mosquitto, tmp_path, hub.trust(), "new")
    try:
        st = old.wait_outcome(2)
        assert (st.version, st.via, st.last_refusal) == (2, "delta", None)
        assert st.bytes_downloaded == ann["deltas"][0]["size"] < ann["size"] / 4
        with open(hub.v2, "rb") as f:
            assert old.updater.data[IDENT] == f.read()
        # the superseded version is gone from disk
        assert sorted(os.listdir(old.store.directory)) == ["hl1+sha.v2.gwl"]
        st = new.wait_outcome(2)
        assert (st.version, st.via) == (2, "snapshot")
        assert st.bytes_downloaded == ann["size"]
    finally:
        old.close()
        new.close()


def test_rollback_refused(mosquitto, hub, tmp_path):
    publish(mosquitto, only([hub.v1], tmp_path / "p1"))
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v2])
    try:
        assert_kept(dev.wait_outcome(1) and dev, 2, "not newer than v2")
        assert dev.status().bytes_downloaded == 0
    finally:
        dev.close()


def test_replay_of_an_older_announcement_refused(mosquitto, hub, tmp_path):
    topic = Topics().manifest("hl1", "sha")
    publish(mosquitto, only([hub.v1], tmp_path / "p1"))
    dev = Device(mosquitto, tmp_path, hub.trust())
    captured = []
    with MqttClient(mosquitto.url, "spy") as spy:
        spy.subscribe(topic, lambda m: captured.append(m.payload)).wait(5)
        wait_for(lambda: captured)
    try:
        dev.wait_outcome(1)
        publish(mosquitto, only([hub.v1, hub.v2], tmp_path / "p2"))
        dev.wait_outcome(2)
        raw_publish(mosquitto, topic, captured[0])  # the genuine, signed v1 announcement again
        assert_kept(dev.wait_outcome(1) and dev, 2, "rollback or replay refused")
    finally:
        dev.close()


def test_expired_refused(mosquitto, hub, tmp_path):
    import time as _t
    old = hub.build(random_entries(1500, 1) + random_entries(50, 3), out=str(tmp_path / "exp"),
                    now=_t.time() - 5 * 86400, expires_days=1, version=2)
    publish(mosquitto, only([old], tmp_path / "p"))
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "expired")
        assert dev.status().bytes_downloaded == 0
    finally:
        dev.close()


def test_wrong_key_refused(mosquitto, hub, tmp_path):
    other = Hub(tmp_path / "other", source="hl1", key_name="rogue")
    forged = other.build(random_entries(10, 9), version=2, out=str(tmp_path / "forged"))
    publish(mosquitto, only([forged], tmp_path / "p"))
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "signature does not verify")
        assert dev.status().bytes_downloaded == 0
    finally:
        dev.close()


def _tamper(mosquitto, topic):
    got = []
    with MqttClient(mosquitto.url, "spy2") as spy:
        spy.subscribe(topic, lambda m: got.append(m.payload)).wait(5)
        wait_for(lambda: got)
    data = bytearray(got[0])
    data[len(data) // 2] ^= 0x01
    raw_publish(mosquitto, topic, bytes(data))
    return bytes(data)


def test_tampered_chunk_refused(mosquitto, hub, tmp_path):
    publish(mosquitto, only([hub.v2], tmp_path / "p"))
    _tamper(mosquitto, Topics().snapshot_chunk("hl1", "sha", 2, 1))
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "chunk 1 does not match its announced digest")
    finally:
        dev.close()


def test_tampered_chunk_with_matching_announcement_refused_by_signed_digest(mosquitto, hub, tmp_path):
    """An attacker who also rewrites the unsigned announcement is caught by the signed digest."""
    import hashlib

    topics = Topics()
    anns = publish(mosquitto, only([hub.v2], tmp_path / "p"))
    bad = _tamper(mosquitto, topics.snapshot_chunk("hl1", "sha", 2, 2))
    ann = dict(anns[0])
    ann["chunk_sha256"] = list(ann["chunk_sha256"])
    ann["chunk_sha256"][2] = hashlib.sha256(bad).hexdigest()
    with open(hub.v2, "rb") as f:
        whole = bytearray(f.read())
    whole[2 * CHUNK:2 * CHUNK + len(bad)] = bad
    ann["sha256"] = hashlib.sha256(bytes(whole)).hexdigest()
    raw_publish(mosquitto, topics.manifest("hl1", "sha"), json.dumps(ann).encode())
    dev = Device(mosquitto, tmp_path, hub.trust())
    try:
        assert_kept(dev.wait_outcome(2) and dev, None, "does not match the signed digest")
    finally:
        dev.close()


def test_missing_chunk_refused(mosquitto, hub, tmp_path):
    publish(mosquitto, only([hub.v2], tmp_path / "p"))
    raw_publish(mosquitto, Topics().snapshot_chunk("hl1", "sha", 2, 3), b"")  # clears the retained chunk
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "chunk 3 of")
        assert "missing" in dev.status().last_refusal["reason"]
    finally:
        dev.close()


def test_oversized_announced_refused_before_download(mosquitto, hub, tmp_path):
    publish(mosquitto, only([hub.v2], tmp_path / "p"))
    cap = os.path.getsize(hub.v2) - 1  # one byte short
    dev = Device(mosquitto, tmp_path, hub.trust(), max_bytes=cap)
    try:
        assert_kept(dev.wait_outcome(2) and dev, None, "over the cap")
        assert dev.status().bytes_downloaded == 0
    finally:
        dev.close()


def test_oversized_actual_refused(mosquitto, hub, tmp_path):
    """A chunk bigger than announced (a broker or attacker stuffing data) is refused on arrival."""
    topics = Topics()
    publish(mosquitto, only([hub.v2], tmp_path / "p"))
    t = topics.snapshot_chunk("hl1", "sha", 2, 0)
    got = []
    with MqttClient(mosquitto.url, "spy3") as spy:
        spy.subscribe(t, lambda m: got.append(m.payload)).wait(5)
        wait_for(lambda: got)
    raw_publish(mosquitto, t, got[0] + b"\0" * 100000)
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "announced %d" % CHUNK)
    finally:
        dev.close()


def test_announcement_lying_about_size_refused(mosquitto, hub, tmp_path):
    topics = Topics()
    anns = publish(mosquitto, only([hub.v2], tmp_path / "p"))
    ann = dict(anns[0])
    ann["size"] = ann["size"] - CHUNK
    ann["chunks"] -= 1
    ann["chunk_sha256"] = ann["chunk_sha256"][:-1]
    raw_publish(mosquitto, topics.manifest("hl1", "sha"), json.dumps(ann).encode())
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "does not match the signed manifest")
        assert dev.status().bytes_downloaded == 0
    finally:
        dev.close()


def test_bad_delta_falls_back_to_snapshot(mosquitto, hub, tmp_path):
    anns = publish(mosquitto, only([hub.v1, hub.v2], tmp_path / "p"))
    _tamper(mosquitto, Topics().delta_chunk("hl1", "sha", 1, 2, 0))
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        st = dev.wait_outcome(2)
        assert (st.version, st.via) == (2, "snapshot")
        assert st.bytes_downloaded == anns[0]["size"]
    finally:
        dev.close()


def test_garbage_announcements_refused(mosquitto, hub, tmp_path):
    topic = Topics().manifest("hl1", "sha")
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        for payload, why in ((b"not json", "not JSON"), (b'{"schema": 9}', "schema"),
                             (json.dumps({"schema": 1, "head": base64.b64encode(b"junk").decode()}).encode(),
                              "bad magic")):
            raw_publish(mosquitto, topic, payload)
            wait_for(lambda: dev.status() and dev.status().last_refusal
                     and why in dev.status().last_refusal["reason"])
            assert dev.updater.lists[IDENT].version == 1
    finally:
        dev.close()


def test_lists_of_untrusted_sources_are_ignored(mosquitto, hub, tmp_path):
    stranger = Hub(tmp_path / "stranger", source="other-hotline", key_name="other")
    theirs = stranger.build(random_entries(50, 5))
    publish(mosquitto, only([theirs, hub.v1], tmp_path / "p"))
    dev = Device(mosquitto, tmp_path, hub.trust())
    try:
        dev.wait_outcome(1)
        assert set(dev.updater.status) == {IDENT}  # nothing recorded, nothing fetched for the stranger
        assert list(dev.store.load()) == [IDENT]
    finally:
        dev.close()


def test_missing_chunk_is_tried_again_and_then_installed(mosquitto, hub, tmp_path):
    topic = Topics().snapshot_chunk("hl1", "sha", 2, 1)
    publish(mosquitto, only([hub.v2], tmp_path / "p"))
    saved = []
    with MqttClient(mosquitto.url, "spy4") as spy:
        spy.subscribe(topic, lambda m: saved.append(m.payload)).wait(5)
        wait_for(lambda: saved)
    raw_publish(mosquitto, topic, b"")  # the chunk goes missing
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1], retry=(0.5, 1.0))
    try:
        assert_kept(dev.wait_outcome(2) and dev, 1, "missing")
        raw_publish(mosquitto, topic, saved[0])  # it comes back; no new announcement is published
        st = wait_for(lambda: dev.status().version == 2 and dev.status(), 20)
        assert st.via == "snapshot"
    finally:
        dev.close()


def _retained(broker, topic):
    got = []
    with MqttClient(broker.url, "spy-ts") as spy:
        spy.subscribe(topic, lambda m: got.append(m.payload)).wait(5)
        wait_for(lambda: got)
    return got[0]


def test_hub_publishes_a_signed_timestamp_that_the_device_follows(mosquitto, hub, tmp_path, capsys):
    from agent.updates.timestamp import verify_timestamp
    from tools.hub_cli import main as hub_main

    folder = only([hub.v1, hub.v2], tmp_path / "p")
    topic = Topics().timestamp("hl1")
    argv = ["publish", "--broker", mosquitto.url, "--lists", folder, "--chunk-size", str(CHUNK),
            "--sign-key", hub.key_path]
    assert hub_main(argv) == 0
    first = verify_timestamp(_retained(mosquitto, topic), hub.trust(), topic_source="hl1")
    assert first.lists == {"sha": 2} and first.expires - first.issued == 8 * 3600
    assert hub_main(argv) == 0  # a restarted hub continues above the seq on the broker
    second = verify_timestamp(_retained(mosquitto, topic), hub.trust(), topic_source="hl1")
    assert second.seq > first.seq
    dev = Device(mosquitto, tmp_path, hub.trust(), held=[hub.v1])
    try:
        st = dev.wait_outcome(2)
        assert (st.version, st.via) == (2, "delta")
        wait_for(lambda: "hl1" in dev.updater.timestamps)
        snap = dev.updater.snapshot()[IDENT]
        assert snap["last_timestamp"] == second.issued and snap["timestamp_version"] == 2
        assert snap["stale"] is False and snap["behind"] is False
    finally:
        dev.close()


def test_hub_every_refreshes_timestamps_and_publishes_new_versions(mosquitto, hub, tmp_path, monkeypatch, capsys):
    """`publish --every`: each round signs a newer timestamp; a new version in the folder is published."""
    import shutil

    from agent.updates.timestamp import verify_timestamp
    from tools import publish as pub
    from tools.hub_cli import main as hub_main

    folder = only([hub.v1], tmp_path / "p")
    topic = Topics().timestamp("hl1")
    seqs = []
    rounds = []

    def fake_sleep(_s):
        seqs.append(verify_timestamp(_retained(mosquitto, topic), hub.trust(), topic_source="hl1"))
        rounds.append(1)
        if len(rounds) == 2:
            shutil.copy(hub.v2, folder)  # the hub built v2
        if len(rounds) == 4:
            raise KeyboardInterrupt
    monkeypatch.setattr(pub, "_pause", fake_sleep)
    assert hub_main(["publish", "--broker", mosquitto.url, "--lists", folder, "--chunk-size", str(CHUNK),
                     "--sign-key", hub.key_path, "--every", "1"]) == 0
    assert [s.lists for s in seqs] == [{"sha": 1}, {"sha": 1}, {"sha": 2}, {"sha": 2}]
    assert all(a.seq < b.seq for a, b in zip(seqs, seqs[1:]))
    assert json.loads(_retained(mosquitto, Topics().manifest("hl1", "sha")))["version"] == 2
