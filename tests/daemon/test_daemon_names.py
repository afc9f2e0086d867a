"""The daemon with url/domain lists: its DNS forwarder and TLS splice come up from the configuration, a
listed name is blocked through the whole decision path (LED, pending record with the host only), and
a configuration they cannot work with is refused at start."""

from __future__ import annotations

import socket

import dns.message
import dns.query
import dns.rcode
import pytest

from agent.config import defaults
from agent.core.errors import ConfigError
from agent.daemon import Agent
from agent.lists.names import read_names
from agent.reports.pending import read_records
from tests.intake.dns.conftest import UpstreamThread
from tests.intake.tls.hellos import real_hello
from tests.listkit import Hub
from tests.waiting import wait_for


@pytest.fixture
def conf(tmp_path):
    hub = Hub(tmp_path / "hub", source="hotline")
    hub.build(read_names("blocked.example.org\n", "domain", "d"), name="doms", signal="domain", capacity=10)
    c = defaults()
    c["agent"].update(state_dir=str(tmp_path / "state"), hal="emulated", status_interval=3600)
    c["lists"].update(dir=hub.out, trust=[hub.pub_path])
    c["localapi"]["enabled"] = False
    return c


def test_daemon_serves_dns_and_tls_name_checks(conf):
    up = UpstreamThread()
    conf["dns"].update(listen="127.0.0.1:0", upstream=["127.0.0.1:%d" % up.port], block_address=["192.0.2.80"])
    conf["tls"].update(listen="127.0.0.1:0")
    agent = Agent(conf).start()
    try:
        dns_port = int(agent.listening["dns"].rsplit(":", 1)[1])
        r = dns.query.udp(dns.message.make_query("cdn.blocked.example.org", "A"), "127.0.0.1", port=dns_port,
                          timeout=5)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].to_text() == "192.0.2.80"
        r = dns.query.udp(dns.message.make_query("www.example.org", "A"), "127.0.0.1", port=dns_port, timeout=5)
        assert r.answer[0][0].to_text() == "203.0.113.7"
        assert agent.led.state == "blocked"
        # no hub here: the hit is kept pending, naming the host alone (no URL was ever seen)
        records = [rec for state, rec in read_records(conf["agent"]["state_dir"]) if state == "pending"]
        assert any(r.get("hosting") == {"host": "cdn.blocked.example.org"} and r.get("signal") == "domain"
                   for r in records), records
        # the TLS splice is up too (a direct connection has no redirect record: it is closed, counted)
        tls_port = int(agent.listening["tls"].rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        s.sendall(real_hello("blocked.example.org"))
        assert s.recv(10) == b""
        s.close()
        server = dict(agent.servers)["tls"]
        wait_for(lambda: server.stats["no_destination"] == 1)
    finally:
        agent.stop()
        up.stop()


@pytest.mark.parametrize("section,values,words", [
    ("dns", {"listen": "127.0.0.1:0"}, "needs an upstream"),
    ("dns", {"listen": "127.0.0.1:0", "upstream": ["resolver.example.net"]}, "not an IP address"),
    ("dns", {"listen": "127.0.0.1:0", "upstream": ["192.0.2.1"], "block_address": ["blockpage"]}, "block_address"),
    ("tls", {"listen": "127.0.0.1:0", "clients": ["not-a-network"]}, "not a network"),
])
def test_unusable_name_settings_are_refused_at_start(conf, section, values, words):
    conf[section].update(values)
    with pytest.raises(ConfigError, match=words):
        Agent(conf).start()
