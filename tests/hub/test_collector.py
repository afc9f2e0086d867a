"""Hub collector: exactly once by id in SQLite, shared subscriptions, queued while away, export."""
from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import time

import pytest

from agent.core.report import encode_report, hosting_from_url, make_report
from agent.core.errors import ConfigError
from agent.mqtt import MqttClient, Topics, wait_all
from tests.brokers import mosquitto, start_mosquitto  # noqa: F401
from tools.collector import Collector, ReportStore, export

from tests.paths import ROOT


def rep(i, source="hl1"):
    return make_report(source, "pdq", 4, "pdq", i % 30, "case-%d" % i,
                       hosting=hosting_from_url("https://h%d.example/a/%d.png?tok=x" % (i % 3, i), "url",
                                                ip="198.51.100.%d" % (i % 200 + 1), country="nl"),
                       now=1_800_000_000 + 3600 * (i % 5), device_secret=b"s", region="NL-NH",
                       agent_version="0.1.0")


def wait_until(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_store_keeps_each_id_once_and_exports_per_source(tmp_path):
    store = ReportStore(tmp_path / "r.db")
    a = [rep(i) for i in range(5)] + [rep(i, "hl2") for i in range(5, 8)]
    assert [store.add(r) for r in a] == [True] * 8
    assert not store.add(a[0]) and store.count() == 8 and store.count("hl2") == 3
    rows = json.loads(export(store, "hl1", "json"))
    assert {r["id"] for r in rows} == {r["id"] for r in a[:5]}
    assert all(r["source"] == "hl1" and "received_at" in r for r in rows)
    assert rows[0]["hosting"]["country"] == "NL"
    table = list(csv.DictReader(io.StringIO(export(store, "hl2", "csv"))))
    assert len(table) == 3 and table[0]["hosting_url"].startswith("https://h")
    assert {t["id"] for t in table} == {r["id"] for r in a[5:]}
    assert export(store, "nobody", "csv").count("\n") == 1  # header only
    with pytest.raises(ConfigError):
        export(store, "hl1", "xml")
    store.close()
    assert ReportStore(tmp_path / "r.db").count() == 8  # durable


def test_store_refuses_bad_paths(tmp_path):
    with pytest.raises(ConfigError):
        ReportStore(tmp_path / "missing" / "r.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError):
        ReportStore(tmp_path / "junk.db")


def test_shared_collectors_store_each_report_once_and_reject_bad_ones(tmp_path):
    broker = start_mosquitto(tmp_path)
    topics = Topics()
    store = ReportStore(tmp_path / "hub.db")
    c1 = MqttClient(broker.url, "col-1", clean_session=False)
    c2 = MqttClient(broker.url, "col-2", clean_session=False)
    try:
        cols = [Collector(c, store, topics).start() for c in (c1, c2)]
        c1.connect()
        c2.connect()
        assert all(c.subscribed.wait(5) for c in cols)
        reports = [rep(i, "hl%d" % (i % 2)) for i in range(200)]
        with MqttClient(broker.url, "dev") as dev:
            acks = [dev.publish(topics.reports(r["source"]), encode_report(r), qos=1) for r in reports]
            acks += [dev.publish(topics.reports(r["source"]), encode_report(r), qos=1) for r in reports[:20]]
            acks.append(dev.publish(topics.reports("hl0"), b'{"schema":1,"id":"x"}', qos=1))
            acks.append(dev.publish(topics.reports("hl0"), encode_report(reports[1]), qos=1))  # wrong topic
            assert wait_all(acks, 10) == len(acks)
        assert wait_until(lambda: sum(c.stored + c.duplicates + c.rejected for c in cols) >= 222)
        assert store.count() == 200 and store.ids() == {r["id"] for r in reports}
        assert sum(c.stored for c in cols) == 200 and sum(c.duplicates for c in cols) == 20
        assert sum(c.rejected for c in cols) == 2
        assert all(c.stored > 20 for c in cols)  # the load was shared
    finally:
        c1.stop()
        c2.stop()
        store.close()
        broker.kill()


def test_reports_wait_at_the_broker_while_the_collector_is_away(tmp_path):
    broker = start_mosquitto(tmp_path)
    topics = Topics()
    db = tmp_path / "hub.db"
    try:
        store = ReportStore(db)
        c = MqttClient(broker.url, "col-x", clean_session=False)
        first = Collector(c, store, topics).start()  # subscribes before connecting ...
        c.connect()
        assert first.subscribed.wait(5)  # ... and that subscribe completes once connected
        c.stop()  # away; its persistent session keeps the shared subscription
        reports = [rep(i) for i in range(30)]
        with MqttClient(broker.url, "dev") as dev:
            assert wait_all([dev.publish(topics.reports("hl1"), encode_report(r), qos=1)
                             for r in reports], 10) == 30
        broker.stop()   # and the broker restarts meanwhile, from its persistence
        broker.start()
        c = MqttClient(broker.url, "col-x", clean_session=False)
        Collector(c, store, topics).start()
        c.connect()
        assert wait_until(lambda: store.count() == 30), store.count()
        c.stop()
        store.close()
    finally:
        broker.kill()


@pytest.mark.slow
def test_cli_collect_and_export(tmp_path):
    broker = start_mosquitto(tmp_path)
    db = tmp_path / "hub.db"
    proc = subprocess.Popen([sys.executable, "-m", "tools.collector", "collect", "--broker", broker.url,
                             "--db", str(db), "--client-id", "cli-col", "--source", "hl0,hl1"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert any("collecting reports" in proc.stdout.readline() for _ in range(5))
        reports = [rep(i, "hl%d" % (i % 2)) for i in range(10)]
        with MqttClient(broker.url, "dev") as dev:
            assert wait_all([dev.publish(Topics().reports(r["source"]), encode_report(r), qos=1)
                             for r in reports], 10) == 10
        assert wait_until(lambda: db.exists() and ReportStore(db).count() == 10)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
        broker.kill()
    assert proc.returncode == 0 and "stored 10 new reports" in out
    r = subprocess.run([sys.executable, "-m", "tools.collector", "export", "--db", str(db), "--source",
                        "hl1", "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0
    assert {x["id"] for x in json.loads(r.stdout)} == {x["id"] for x in reports if x["source"] == "hl1"}
    out_csv = tmp_path / "hl0.csv"
    r = subprocess.run([sys.executable, "-m", "tools.collector", "export", "--db", str(db), "--source",
                        "hl0", "--format", "csv", "--out", str(out_csv)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and len(out_csv.read_text().splitlines()) == 6
    r = subprocess.run([sys.executable, "-m", "tools.collector", "export", "--db", str(tmp_path / "no.db"),
                        "--source", "hl0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "no.db").exists()


def test_plain_subscription_without_group(mosquitto, tmp_path):
    store = ReportStore(tmp_path / "hub.db")
    try:
        with MqttClient(mosquitto.url, "col-plain") as c, MqttClient(mosquitto.url, "dev") as dev:
            col = Collector(c, store, Topics(), group=None).start()
            assert col.subscribed.wait(5)
            r = rep(3)
            assert dev.publish(Topics().reports("hl1"), encode_report(r), qos=1).wait(5)
            assert wait_until(lambda: store.count() == 1) and store.ids() == {r["id"]}
    finally:
        store.close()


def test_failed_store_is_not_acknowledged_and_comes_again(tmp_path):
    broker = start_mosquitto(tmp_path)
    topics = Topics()
    store = ReportStore(tmp_path / "hub.db")
    real_add, calls = store.add, []

    def flaky_add(report, received_at=None):
        calls.append(report["id"])
        if len(calls) == 1:
            raise OSError("disk I/O error (simulated)")
        return real_add(report, received_at)

    store.add = flaky_add
    c = MqttClient(broker.url, "col-flaky", clean_session=False, reconnect=(1, 2))
    try:
        col = Collector(c, store, topics).start()
        c.connect()
        assert col.subscribed.wait(5)
        r = rep(1)
        with MqttClient(broker.url, "dev") as dev:
            assert dev.publish(topics.reports("hl1"), encode_report(r), qos=1).wait(5)
        assert wait_until(lambda: store.count() == 1, 20), calls
        assert calls[:2] == [r["id"], r["id"]] and col.stored == 1
        assert c.connects >= 2  # the connection was dropped instead of acknowledging
    finally:
        c.stop()
        store.close()
        broker.kill()


# ---------------------------------------------------------------- hardening (what a device may send)

class _Pub:
    """Records what the collector publishes (acks, clearing retained messages)."""

    def __init__(self):
        self.sent = []

    def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, payload, retain))


def _msg(topic, payload, retain=False):
    from agent.mqtt import Message
    return Message(topic, payload, 1, retain)


def test_collector_refuses_retained_oversized_invalid_and_unserved_and_logs_no_content(tmp_path, caplog):
    from agent.core.report import MAX_REPORT_BYTES
    store = ReportStore(tmp_path / "hub.db")
    pub = _Pub()
    t = Topics()
    col = Collector(pub, store, t, sources={"hl1"})
    good = rep(1)
    secret = "c00k1e-in-junk"
    token = "0123456789abcdef"
    junk = dict(good, entry="x" * 300 + secret)            # fails the schema (entry > 256)
    extra = dict(good, client="192.168.1.23")              # a field the schema does not allow
    big = b'{"pad":"' + b"A" * (100 * 1024) + b'"}'
    caplog.set_level(logging.INFO)
    other = rep(2, "hl9")
    sent = [_msg(t.reports("hl1", token), encode_report(good), retain=True),   # retained
            _msg(t.reports("hl1", token), big),                                # 100 KB
            _msg(t.reports("hl1", token), json.dumps(junk).encode()),
            _msg(t.reports("hl1", token), json.dumps(extra).encode()),
            _msg(t.reports("hl9", token), encode_report(other)),               # not served
            _msg(t.reports("hl1", "NOT-A-TOKEN"), encode_report(good)),       # bad token
            _msg("gatewatch/v1/reports/hl1/%s/x" % token, encode_report(good))]
    for m in sent:
        col._on_message(m)
    assert store.count() == 0 and col.stored == 0
    assert col.refusals == {"retained": 1, "size": 1, "schema": 2, "source": 1, "topic": 2}
    assert col.rejected == 7
    # every refused message is cleared from the broker (retained or not); nothing is acknowledged
    assert pub.sent == [(m.topic, b"", True) for m in sent] and len(pub.sent) == 7
    logs = caplog.text
    assert secret not in logs and "192.168.1.23" not in logs and token not in logs and "hl9" not in logs
    assert "AAAA" not in logs and "refused a report: schema" in logs
    # the same report, valid, on a served source: stored and acknowledged on the token's topic
    col._on_message(_msg(t.reports("hl1", token), encode_report(good)))
    assert store.count() == 1 and pub.sent[-1] == (t.ack(token), json.dumps({"ids": [good["id"]]},
                                                                             separators=(",", ":")).encode(), False)
    assert MAX_REPORT_BYTES < len(big)
    store.close()


def test_served_sources_from_names_and_list_folder(tmp_path):
    from tools.collector import served_sources
    (tmp_path / "lists" / "hub").mkdir(parents=True)
    (tmp_path / "lists" / "hotline+known.v1.gwl").write_bytes(b"x")
    (tmp_path / "lists" / "ncmec+pdq.v3.gwl").write_bytes(b"x")
    assert served_sources(["a,b", "c"], str(tmp_path / "lists")) == {"a", "b", "c", "hotline", "ncmec"}
    with pytest.raises(ConfigError):
        served_sources([], str(tmp_path / "nope"))


def test_cli_collect_needs_sources_and_gives_up_on_a_dead_broker_within_its_duration(tmp_path):
    from tests.brokers import free_port
    dead = "mqtt://127.0.0.1:%d" % free_port()
    r = subprocess.run([sys.executable, "-m", "tools.collector", "collect", "--broker", dead, "--db",
                        str(tmp_path / "h.db")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--source" in r.stderr
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "tools.collector", "collect", "--broker", dead, "--db",
                        str(tmp_path / "h.db"), "--source", "hl1", "--duration", "3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 1 and took < 3 + 4, (took, r.stderr)
    assert "gave up" in r.stderr and "could not connect" in r.stderr


def test_cli_export_of_an_unknown_source_says_so_and_lists_the_known_ones(tmp_path):
    db = tmp_path / "hub.db"
    store = ReportStore(db)
    store.add(rep(1, "hl1"))
    store.add(rep(2, "hl2"))
    store.close()
    r = subprocess.run([sys.executable, "-m", "tools.collector", "export", "--db", str(db), "--source",
                        "hl3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert "no reports for source 'hl3'" in r.stderr and "hl1, hl2" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tools.collector", "export", "--db", str(db), "--source",
                        "hl2"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
