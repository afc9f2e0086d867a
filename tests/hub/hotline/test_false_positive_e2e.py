"""The false-positive path end to end, every part a real process: an analyst rejects a case in
chromium and the device lets the image through after the next list update, reporting nothing.

- hotline A's hub (`gatewatch-hub hotline serve`: review pages, report collector, allow feed),
  `gatewatch-hub publish --every` on the folder the hub rebuilds allow lists into, a real mosquitto,
  the hub's confirmation service, and `gatewatch run` with its built-in proxy;
- the device fetches a listed image through its proxy: 403, confirmed, reported; the hub makes a
  case of it (the origin is on loopback: no hosting country, so the case stays with A);
- alice logs in and rejects the case as a false positive; the hub appends the entry and its digest
  to its allow input and signs hotline-a's allow list into the published folder; the publisher sends
  it, the device installs it;
- the same image, fetched again, loads unchanged; the device counts it `allowed` (status file and
  status topic) and reports nothing: its spool stays empty and the hub's case keeps its one report.

The image is a generated benign picture standing in for listed material.
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
from agent.mqtt import MqttClient, Topics
from tests.brokers import mosquitto  # noqa: F401
from tests.daemon.proxydevice import ProxyDevice
from tests.hub.hotline.chromium import browser, click_through, log_in
from tests.hub.hotline.kit import Network, env_with_root
from tests.hub.hotline.procs import HubProcess, read_db
from tests.listkit import Hub
from tests.paths import ROOT
from tests.waiting import free_port, stop_process, wait_for
from tools.demo import Origin
from tools.hotline.review import add_account
from tools.hotline.store import open_store

PASSWORD = "correct horse battery staple"


def start_confirmation(broker_url, lists_out):
    """The hub's confirmation service for the device's hits, started as tests/daemon/test_daemon_allow.py
    starts it (the one place to adapt when the confirmation protocol changes)."""
    from tools.confirm_service import ConfirmService
    client = MqttClient(broker_url, "hub-a-confirm", reconnect=(1, 2))
    ConfirmService(client, Topics(), lists_out).start()
    client.connect()
    return client


@pytest.mark.slow
def test_rejected_in_the_browser_the_image_passes_on_the_device_unreported(tmp_path, dns, mosquitto,  # noqa: F811
                                                                         monkeypatch):
    from selenium.webdriver.common.by import By
    monkeypatch.setenv("SE_OFFLINE", "true")          # Selenium Manager must never fetch anything
    fp = encode(generate_image(8810, (256, 192)), "JPEG", 90)
    digest = hashlib.sha256(fp).hexdigest()
    net = Network(tmp_path / "net", {"hotline-a": ["NL"]}, ports={"hotline-a": free_port()})
    lists = Hub(tmp_path / "lists", source="hotline-a")
    lists.build([Entry("known-0", bytes.fromhex(digest))], name="known", capacity=50)
    db = tmp_path / "a.sqlite"
    store = open_store(str(db))
    add_account(store, "alice", PASSWORD)
    store.close()
    review_port = free_port()
    hub = HubProcess(net, "hotline-a", db, dns.server, mosquitto.url, ["hotline-a"], extra=[
        "--review-listen", "127.0.0.1:%d" % review_port, "--allow-dir", str(tmp_path / "allow"),
        "--publish-dir", lists.out, "--allow-key", "hotline-a=%s" % lists.key_path,
        "--entries", os.path.join(lists.out, "hub")])
    publish_log = open(tmp_path / "publish.log", "wb")
    publisher = subprocess.Popen(
        [sys.executable, "-m", "tools.hub_cli", "publish", "--broker", mosquitto.url, "--client-id", "hub-a-publish",
         "--lists", lists.out, "--every", "0.5", "--sign-key", "hotline-a=%s" % lists.key_path, "--chunk-size", "4096"],
        stdout=publish_log, stderr=subprocess.STDOUT, env=env_with_root(ROOT), cwd=str(ROOT))
    confirm = start_confirmation(mosquitto.url, lists.out)
    origin = Origin({"/fp.jpg": ("image/jpeg", fp)}).start()
    statuses = []
    watcher = MqttClient(mosquitto.url, "status-watcher")
    watcher.subscribe(Topics().status("dev-fp"), lambda m: statuses.append(json.loads(m.payload)))
    watcher.connect()
    device = drv = None
    try:
        hub.start()
        assert any("allow lists of hotline-a signed into %s" % lists.out in ln for ln in hub.lines), hub.lines
        device = ProxyDevice(tmp_path, mosquitto.url, "dev-fp", "hotline-a", lists.pub_path,
                             extra="[reports]\nresend_after = 0.5\nresend_max = 1.0\n")

        def fetch():
            return device.fetch(origin.url("/fp.jpg"))

        device.wait_listening()
        wait_for(lambda: device.held("hotline-a/known") == 1, 30)
        assert fetch() == 403
        # the report reaches the hub's collector, becomes a case, and the device's spool empties
        wait_for(lambda: [c["reports"] for c in read_db(str(db))[1]] == [1], 30)
        wait_for(lambda: device.status()["reports"]["spool_depth"] == 0, 30)
        case = read_db(str(db))[0][0]
        assert (case["url"], case["country"], case["responsible"]) == (origin.url("/fp.jpg"), None, None)

        drv = browser(tmp_path / "profile")
        drv.get("http://127.0.0.1:%d/" % review_port)
        log_in(drv, "alice", PASSWORD)
        row = drv.find_element(By.ID, "case-" + case["id"])
        assert origin.url("/fp.jpg") in row.text and "hotline-a/known" in row.text and "known-0" in row.text
        click_through(drv, row.find_element(By.CSS_SELECTOR, "button.act-reject"))
        assert "reject as false positive" in drv.find_element(By.CLASS_NAME, "flash").text
        assert read_db(str(db))[0][0]["status"] == "rejected"

        # the rebuilt, signed allow list travels through the publisher and the broker to the device
        wait_for(lambda: device.held("hotline-a/allow") == 1, 30)
        assert device.status()["lists"]["hotline-a/allow"]["entries"] == 2     # the entry and its digest
        assert fetch() == fp                                                    # loads, unchanged
        wait_for(lambda: statuses and statuses[-1]["allowed"] == 1, 10)        # status topic: counted
        wait_for(lambda: device.status()["policy"]["allowed"] == 1, 10)
        st = device.status()
        assert (st["policy"]["reported"], st["policy"]["blocked"], st["reports"]["spool_depth"]) == (1, 1, 0)
        cases, counts, _ = read_db(str(db))                                     # nothing new at the hub
        assert len(cases) == 1 and [c["reports"] for c in counts] == [1]
    finally:
        if drv is not None:
            drv.quit()
        code = device.stop() if device is not None else None
        stop_process(publisher)
        publish_log.close()
        hub.stop()
        confirm.stop()
        watcher.stop()
        origin.stop()
    assert code == 0, device.log()
    lines = (tmp_path / "allow" / "hotline-a.txt").read_text().splitlines()
    assert "entry,hotline-a/known,known-0" in lines and "sha256,%s" % digest in lines
    assert "allowed by hotline-a/allow v1 entry #" in device.log()
