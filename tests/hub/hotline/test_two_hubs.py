"""End to end: two hotline hubs, a real broker, real agents, the test DNS, the shipped country database.

Hotline A covers NL (country X), hotline B covers FR (country Y). Three devices take their lists from
A (A's broker, A's signed list of a benign stand-in image, A's confirmation service) and see that
image at ``http://img.hosted-in-fr.test/k.jpg``; the test DNS maps the name to an address the
database places in FR. The case must appear at B's hub once, with country FR and the sightings of
the three devices (one of which floods), while A keeps its copy, and nothing may be lost or
doubled when B and then A are SIGKILLed in the middle and started again.

The devices see the image through the agent's local check API (the hosting URL comes with the
bytes, as with ICAP): its HTTP proxy would have to resolve the test name with the system resolver.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from agent.confirm.wire import Entry
from agent.hashing.samples import encode, generate_image
from agent.intake.localapi import LocalApiClient
from agent.mqtt import MqttClient, Topics
from tests.brokers import start_mosquitto
from tests.hub.hotline.kit import ADDRESS, Network, env_with_root
from tests.hub.hotline.procs import HubProcess, read_db
from tests.listkit import Hub, only
from tests.paths import ROOT
from tests.waiting import free_port, stop_process, wait_for
from tools.confirm_service import ConfirmService
from tools.publish import publish_lists

URL = "http://img.hosted-in-fr.test/k.jpg"


class Device:
    """`gatewatch run` with its own state folder (so its own device secret: its own pseudonym)."""

    def __init__(self, folder, name, broker_url, pub_path):
        self.name, self.state = name, folder / name
        (self.state / "trust").mkdir(parents=True)
        (self.state / "trust" / "hotline-a.pub").write_text(open(pub_path).read())
        self.sock = str(folder / ("%s.sock" % name))
        self.cfg = folder / ("%s.toml" % name)
        self.cfg.write_text(
            '[agent]\nstate_dir = "%s"\nclient_id = "%s"\nstatus_interval = 0.5\nhal = "emulated"\n'
            '[broker]\nurl = "%s"\n[policy]\nconfirm_timeout = 5.0\n[localapi]\nsocket = "%s"\n'
            '[reports]\nresend_after = 0.5\nresend_max = 1.0\n' % (self.state, name, broker_url, self.sock))
        self.log = open(folder / ("%s.log" % name), "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(self.cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env_with_root(ROOT), cwd=ROOT)

    def status(self):
        r = subprocess.run([sys.executable, "-m", "agent.cli", "status", "--state-dir", str(self.state), "--json"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60, env=env_with_root(ROOT))
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {}

    def ready(self):
        st = self.status()
        return os.path.exists(self.sock) and st.get("lists", {}).get("hotline-a/known", {}).get("version") == 1

    def see(self, image, n):
        """The device's users fetch the image ``n`` times; every fetch is blocked as a confirmed match."""
        with LocalApiClient(self.sock) as api:
            for _ in range(n):
                d = api.check_bytes(image, url=URL + "?session=not-for-the-hub", content_type="image/jpeg")
                assert d["action"] == "block" and d["reason"] == "match-confirmed", d

    def unsent(self):
        """Reports in the device's spool (not yet acknowledged by the hub), from its status."""
        return self.status().get("reports", {}).get("spool_depth")

    def stop(self):
        stop_process(self.proc)
        self.log.close()


@pytest.mark.slow
def test_case_reaches_the_hosting_countrys_hotline_once_across_hub_kills(tmp_path, dns):
    net = Network(tmp_path / "net", {"hotline-a": ["NL"], "hotline-b": ["FR"]},
                  ports={"hotline-a": free_port(), "hotline-b": free_port()})
    known = encode(generate_image(4242, (64, 48)), "JPEG", 90)       # benign stand-in for known material
    lists = Hub(tmp_path / "lists", source="hotline-a")
    v1 = lists.build([Entry("known-0", hashlib.sha256(known).digest())], name="known", capacity=50)
    broker = start_mosquitto(tmp_path)
    hub_log = open(tmp_path / "hubs.log", "a")
    a = HubProcess(net, "hotline-a", tmp_path / "a.sqlite", dns.server, broker.url, ["hotline-a"], log=hub_log)
    b = HubProcess(net, "hotline-b", tmp_path / "b.sqlite", dns.server, log=hub_log)
    confirm = MqttClient(broker.url, "hub-a-confirm", reconnect=(1, 2))
    devices = []
    try:
        a.start()
        b.start()
        ConfirmService(confirm, Topics(), lists.out).start()
        confirm.connect()
        with MqttClient(broker.url, "hub-a-publisher") as pub:
            publish_lists(pub, Topics(), only([v1], tmp_path / "pub"), chunk_size=4096)
        devices = [Device(tmp_path, "dev-%d" % i, broker.url, lists.pub_path) for i in range(3)]
        wait_for(lambda: all(d.ready() for d in devices), 90)

        devices[0].see(known, 12)                       # one device floods: one sighting a day
        wait_for(lambda: read_db(b.db)[1] and read_db(b.db)[1][0]["reports"] == 12, 30)
        b.kill()                                        # B's power cut in the middle
        devices[1].see(known, 3)                        # A counts them, its outbox keeps retrying B
        wait_for(lambda: read_db(a.db)[1] and read_db(a.db)[1][0]["reports"] == 15, 30)
        b.start()
        a.kill()                                        # and A's
        devices[2].see(known, 2)                        # the devices keep these until A acknowledges
        wait_for(lambda: devices[2].unsent() == 2, 30)
        a.start()

        def settled():
            cases_b, counts_b, _ = read_db(b.db)
            _, _, outbox_a = read_db(a.db)
            return cases_b and counts_b and counts_b[0]["reports"] == 17 and not outbox_a
        wait_for(settled, 60)
        wait_for(lambda: all(d.unsent() == 0 for d in devices), 30)

        cases_b, counts_b, _ = read_db(b.db)
        cases_a, counts_a, outbox_a = read_db(a.db)
        assert len(cases_b) == 1 and len(counts_b) == 1, (cases_b, counts_b)        # once
        cb, nb = cases_b[0], counts_b[0]
        assert (cb["country"], cb["ip"], cb["responsible"]) == ("FR", ADDRESS["FR"], "hotline-b")
        assert cb["url"] == URL and cb["source"] == "hotline-a" and cb["entry"] == "known-0"
        assert (nb["origin"], nb["sightings"], nb["reports"]) == ("hotline-a", 3, 17)  # three devices, 17 hits
        assert len(cases_a) == 1 and cases_a[0]["id"] == cb["id"] and cases_a[0]["responsible"] == "hotline-b"
        assert (counts_a[0]["sightings"], counts_a[0]["reports"]) == (3, 17) and outbox_a == []
        for db in (a.db, b.db):                                     # nothing about the subscriber reached a hub
            raw = open(db, "rb").read() + b"".join(open(p, "rb").read() for p in (db + "-wal",) if os.path.exists(p))
            assert b"not-for-the-hub" not in raw and b"dev-0" not in raw
    finally:
        for d in devices:
            d.stop()
        confirm.stop()
        a.stop()
        b.stop()
        broker.kill()
        hub_log.close()
