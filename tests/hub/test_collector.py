"""Hub collector: exactly once by id in SQLite, shared subscriptions, queued while away, export."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

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
        col = Collector(c, store, topics).start()
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
                             "--db", str(db), "--client-id", "cli-col"], cwd=ROOT,
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
