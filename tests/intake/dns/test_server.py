"""The DNS forwarder on loopback, between a dnspython client and the local test resolver."""

import os
import socket
import struct
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from agent.core.errors import ConfigError
from agent.intake.dns.server import DnsLimits, Upstreams, parse_address
from tests.intake.dns.conftest import NameInspector
from tests.waiting import free_port, wait_for


def ask(port, name, rdtype="A", tcp=False, timeout=5):
    q = dns.message.make_query(name, rdtype)
    f = dns.query.tcp if tcp else dns.query.udp
    return q, f(q, "127.0.0.1", port=port, timeout=timeout)


def raw_udp(port, wire, timeout=1.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


@pytest.mark.parametrize("tcp", [False, True])
def test_listed_names_blocked_the_rest_forwarded_byte_identical(forwarder, upstream, tcp):
    fw = forwarder()
    _q, r = ask(fw.port, "cdn.blocked.example.org", tcp=tcp)
    assert r.rcode() == dns.rcode.NXDOMAIN and "cdn.blocked.example.org" not in upstream.zone.seen
    q = dns.message.make_query("www.example.org", "A")
    wire = q.to_wire()
    via = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=fw.port, timeout=5)
    direct = upstream.zone.answer(wire)
    assert via.to_wire() == direct  # the upstream's own bytes, untouched
    assert via.answer[0][0].to_text() == "203.0.113.7"
    assert fw.server.stats["forwarded"] == 1 and fw.server.stats["blocked_answers"] == 1


def test_no_upstream_answer_is_servfail_and_counted(forwarder):
    dead = free_port()
    fw = forwarder(upstreams=Upstreams(["127.0.0.1:%d" % dead]), limits=DnsLimits(upstream_timeout=0.3))
    _q, r = ask(fw.port, "www.example.org")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert fw.server.stats["servfail"] == 1 and fw.server.stats["upstream_errors"] + \
        fw.server.stats["upstream_timeouts"] == 1


def test_next_upstream_when_the_first_is_dead(forwarder, upstream):
    fw = forwarder(upstreams=Upstreams(["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % upstream.port]),
                   limits=DnsLimits(upstream_timeout=0.5))
    _q, r = ask(fw.port, "www.example.org")
    assert r.answer[0][0].to_text() == "203.0.113.7"


def test_a_failing_lookup_forwards_and_is_counted_as_a_bypass(forwarder):
    fw = forwarder(NameInspector(fail=True))
    _q, r = ask(fw.port, "cdn.blocked.example.org")
    assert r.rcode() == dns.rcode.NOERROR  # fail-open: forwarded
    assert fw.server.stats["lookup_errors"] == 1 and fw.server.stats["bypassed"] == 1


def test_a_spoofed_reply_from_elsewhere_is_not_taken(forwarder):
    # an upstream that answers with the wrong question first, then the right one: only the right one counts
    bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad.bind(("127.0.0.1", 0))
    import threading

    def serve():
        data, addr = bad.recvfrom(65535)
        q = dns.message.from_wire(data)
        other = dns.message.make_response(dns.message.make_query("evil.example.net", "A"))
        other.id = q.id
        bad.sendto(other.to_wire(), addr)
        good = dns.message.make_response(q)
        bad.sendto(good.to_wire(), addr)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    fw = forwarder(upstreams=Upstreams(["127.0.0.1:%d" % bad.getsockname()[1]]))
    q, r = ask(fw.port, "www.example.org")
    t.join(5)
    bad.close()
    assert r.question[0].name.to_text() == "www.example.org." and fw.server.stats["mismatched_replies"] == 1


def test_hostile_datagrams_get_an_answer_or_a_drop_and_service_goes_on(forwarder):
    fw = forwarder()
    good = dns.message.make_query("www.example.org", "A").to_wire()
    assert raw_udp(fw.port, b"\x12") is None
    loop_ = good[:4] + struct.pack("!HHHH", 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    r = raw_udp(fw.port, loop_)
    assert r is not None and r[:2] == loop_[:2] and r[3] & 0xF == dns.rcode.FORMERR
    response = dns.message.make_response(dns.message.from_wire(good)).to_wire()
    assert raw_udp(fw.port, response, 0.3) is None
    _q, r = ask(fw.port, "www.example.org")
    assert r.rcode() == dns.rcode.NOERROR


def test_tcp_bounds_huge_length_idle_clients_and_connection_cap(forwarder):
    fw = forwarder(limits=DnsLimits(tcp_idle_timeout=0.5, max_tcp_connections=4))
    s = socket.create_connection(("127.0.0.1", fw.port))
    s.sendall(b"\xff\xff" + b"x" * 100)  # announces 65535, sends 100, then stalls: closed after the idle time
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(10) == b""
    assert time.monotonic() - t0 < 4
    s.close()
    idle = [socket.create_connection(("127.0.0.1", fw.port)) for _ in range(4)]
    wait_for(lambda: fw.server.stats["tcp_connections"] >= 5)
    extra = socket.create_connection(("127.0.0.1", fw.port))
    extra.settimeout(5)
    assert extra.recv(10) == b""  # over the cap: closed at once
    for c in idle + [extra]:
        c.close()
    _q, r = ask(fw.port, "www.example.org", tcp=True)
    assert r.rcode() == dns.rcode.NOERROR and fw.server.stats["tcp_rejected"] >= 1


def test_upstreams_from_a_resolv_file_follow_its_changes_and_skip_ourselves(tmp_path, upstream, forwarder):
    path = tmp_path / "resolv.conf.auto"
    path.write_text("# WAN\nnameserver 127.0.0.1\nsearch lan\n")
    ups = Upstreams([], str(path))
    assert ups.current() == [("127.0.0.1", 53)]
    fw = forwarder(upstreams=ups, limits=DnsLimits(upstream_timeout=0.3))
    path.write_text("nameserver 127.0.0.1:%d\nnameserver 127.0.0.1:%d\nnameserver bogus\n" % (fw.port, upstream.port))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert ups.current() == [("127.0.0.1", upstream.port)]  # our own address would loop: skipped
    _q, r = ask(fw.port, "www.example.org")
    assert r.answer[0][0].to_text() == "203.0.113.7"


def test_upstream_addresses_are_checked():
    assert parse_address("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_address("[2001:db8::1]:5353") == ("2001:db8::1", 5353)
    assert parse_address("2001:db8::1") == ("2001:db8::1", 53)
    for bad in ("dns.example.org", "1.2.3.4:0", "1.2.3.4:99999", "[::1]x", "1.2.3.4:٥٣"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    with pytest.raises(ConfigError, match="needs an upstream"):
        Upstreams([], "")
