"""Expiry behaves the same at run time as at a start; stale or expired lists show a fault.

The updater is driven with an injected clock; the daemon tests use lists that expire a few seconds
after the test starts. Lists are random digests only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import pytest

from agent.action import Action
from agent.config import defaults
from agent.daemon import Agent
from agent.lists.store import ListStore
from agent.mqtt import MqttClient, Topics
from agent.updates.updater import Updater
from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, only, random_entries, wait_for
from tools.publish import TimestampSigner, publish_lists

DAY = 86400.0
IDENT = "hl1/sha"


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Led:
    def __init__(self):
        self.state = None
        self.history = []

    def set_state(self, state):
        self.state = state
        self.history.append(state)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    h = Hub(tmp_path_factory.mktemp("hub"))
    h.created = 1_800_000_000
    h.v1 = h.build(random_entries(200, 1), now=h.created, expires_days=1)
    return h


def _updater(tmp_path, hub, clock, swaps):
    lists = tmp_path / "state" / "lists"
    os.makedirs(lists, exist_ok=True)
    shutil.copy(hub.v1, lists)
    store = ListStore(str(lists), hub.trust(), clock=clock)
    return Updater(None, Topics(), store, on_lists=lambda d: swaps.append(sorted(d)))


def test_expired_list_is_dropped_at_run_time_as_at_a_start(tmp_path, hub, caplog):
    expires = hub.created + DAY
    clock = Clock(expires - 60)
    swaps = []
    up = _updater(tmp_path, hub, clock, swaps)
    assert list(up.lists) == [IDENT]
    assert up.check_freshness(stale_after=0)["dropped"] == [] and swaps == []
    clock.t = expires + 1
    with caplog.at_level(logging.WARNING):
        fresh = up.check_freshness(stale_after=0)
    assert fresh["dropped"] == [IDENT] and fresh["expired"] == [IDENT] and fresh["fault"] is True
    assert swaps == [[]]  # the scanner swapped to the lists in force: none
    assert up.lists == {}
    assert "expired" in caplog.text and "dropped from the lists in force" in caplog.text
    st = up.snapshot()[IDENT]
    assert st["version"] is None and st["expired"] is True
    assert st["dropped"] == {"version": 1, "expired_at": expires, "at": expires + 1}
    assert up.check_freshness(stale_after=0)["dropped"] == [] and swaps == [[]]  # once
    # and a restart at that moment refuses the same file: the two paths agree
    store = ListStore(str(tmp_path / "state" / "lists"), hub.trust(), clock=clock)
    assert store.load() == {} and "expired" in store.refused[0].reason


def test_led_shows_fault_while_lists_are_stale_and_ok_after():
    led = Led()
    action = Action(spool=None, led=led, clock=lambda: 0.0)
    action.idle(lists_in_force=1, broker_away_for=None)
    assert led.state == "ok"
    action.idle(lists_in_force=1, broker_away_for=None, lists_stale=True)
    assert led.state == "fault"
    action.idle(lists_in_force=1, broker_away_for=None)  # a caller that does not know keeps the fault
    assert led.state == "fault"
    action.idle(lists_in_force=1, broker_away_for=None, lists_stale=False)
    assert led.state == "ok"


def _conf(tmp_path, **lists):
    conf = defaults()
    conf["agent"].update(state_dir=str(tmp_path / "state"), hal="emulated", status_interval=0.2)
    conf["localapi"]["enabled"] = False
    conf["lists"].update(lists)
    return conf


def test_daemon_drops_a_folder_list_when_it_expires(tmp_path):
    hub = Hub(tmp_path / "hub")
    # created a day ago, expiring in 2 seconds
    soon = hub.build(random_entries(200, 4), now=time.time() - DAY + 2, expires_days=1)
    agent = Agent(_conf(tmp_path, dir=only([soon], tmp_path / "folder"), trust=[hub.pub_path])).start()
    try:
        assert [l.ident for l in agent.scanner.lists] == [IDENT]
        wait_for(lambda: not agent.scanner.lists, 10)
        st = agent.status()
        assert IDENT not in st["lists"]
        assert any("dropped from the lists in force at run time" in r["reason"] for r in st["lists_refused"])
        wait_for(lambda: agent.led.state == "fault", 5)
    finally:
        agent.stop()


def test_daemon_shows_a_frozen_source_as_stale_on_status_led_and_topic(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    v1 = hub.build(random_entries(200, 5))
    with MqttClient(mosquitto.url, "publisher") as c:
        publish_lists(c, Topics(), only([v1], tmp_path / "p"), chunk_size=4096,
                      signers={"hl1": TimestampSigner("hl1", hub.key)})
    conf = _conf(tmp_path, trust=[hub.pub_path], stale_hours=2.0 / 3600)  # 2 s without fresh word
    conf["broker"]["url"] = mosquitto.url
    conf["agent"]["client_id"] = "dev-stale"
    seen = {}
    with MqttClient(mosquitto.url, "watcher") as w:
        w.subscribe(Topics().status("dev-stale"), lambda m: seen.__setitem__("s", m.payload)).wait(5)
        agent = Agent(conf).start()
        try:
            wait_for(lambda: agent.status()["lists"].get(IDENT, {}).get("version") == 1
                     and agent.status()["lists"][IDENT]["last_timestamp"] is not None, 15)
            st = agent.status()["lists"][IDENT]
            assert st["last_timestamp"] is not None and st["stale"] is False and st["timestamp_version"] == 1
            # the broker passes nothing new on: after 2 s the source is stale
            wait_for(lambda: agent.status()["lists"][IDENT]["stale"] is True, 10)
            wait_for(lambda: agent.led.state == "fault", 5)
            wait_for(lambda: seen.get("s") and json.loads(seen["s"])["lists"][IDENT]["stale"] is True, 5)
            assert [l.version for l in agent.scanner.lists] == [1]  # still in force: stale is a warning
        finally:
            agent.stop()
