"""Hostile requests get a clear error and the proxy keeps serving; loops and forbidden upstreams are refused."""

import socket
import time

import pytest

from agent.intake.proxy.netpolicy import ClientNetworks, normal_ip, upstream_refusal
from tests.intake.proxy.origins import ScriptedOrigin, raw_request, responses, split_response


@pytest.fixture(scope="module")
def origin_server():
    o = ScriptedOrigin()
    yield o
    o.stop()


@pytest.fixture
def origin(origin_server):
    """One origin per module (stopping one costs 0.5 s); routes and records reset per test."""
    origin_server.routes.clear()
    origin_server.routes.update({"/ok": lambda h, b: (200, [("Content-Type", "text/plain")], b"fine"),
                        "/echo": lambda h, b: (200, [("Content-Type", "text/plain")], b"got:" + b)})
    origin_server.seen.clear()
    return origin_server


def still_serves(lt, origin):
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % origin.url("/ok").encode())
    status, _, body = split_response(raw)
    assert status == 200 and body == b"fine"


HOSTILE_TRANSPARENT = [
    b"Host: a:xyz", b"Host: a:99999", b"Host: [::1", b"Host: " + b"a" * 70 + b".example", b"Host: a:-1",
    b"Host: a:0", b"Host: \xb2\xb2", b"Host: a\r\nHost: b", b"Host: a@b", b"Host: 1.2.3.4.5",
]
HOSTILE_EXPLICIT = [
    b"GET http://a:xyz/ HTTP/1.1\r\nHost: x", b"GET http://a:99999/ HTTP/1.1\r\nHost: x",
    b"GET http://[::1/ HTTP/1.1\r\nHost: x", b"GET http://" + b"a" * 70 + b".example/ HTTP/1.1\r\nHost: x",
    b"GET http://u:p@a/ HTTP/1.1\r\nHost: x", b"GET http:/// HTTP/1.1\r\nHost: x",
]


@pytest.mark.parametrize("host", HOSTILE_TRANSPARENT)
def test_bad_hosts_get_400_transparent(proxy, origin, host):
    lt = proxy(mode="transparent")
    status, _, body = split_response(raw_request(lt.port, b"GET /ok HTTP/1.1\r\n" + host + b"\r\n\r\n"))
    assert status == 400, body
    assert lt.server.stats["internal_errors"] == 0


@pytest.mark.parametrize("start", HOSTILE_EXPLICIT)
def test_bad_urls_get_400_explicit(proxy, origin, start):
    lt = proxy()
    status, _, body = split_response(raw_request(lt.port, start + b"\r\n\r\n"))
    assert status == 400, body
    still_serves(lt, origin)


@pytest.mark.parametrize("fields", [
    b"Content-Length: \xb2",  # latin-1 '\xb2' is '\u00b2': isdigit() said yes, int() then raised
    b"Content-Length: -1", b"Content-Length: 99999999999999999999", b"Content-Length: 1e3",
    b"Content-Length: 3\r\nContent-Length: 4",
    b"Transfer-Encoding: chunked, identity\r\nContent-Length: 3",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3",
    b"Transfer-Encoding: identity",
    b"X-Bad: a\rb",
])
def test_bad_framing_gets_400(proxy, origin, fields):
    lt = proxy()
    raw = raw_request(lt.port, b"POST %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\nabc" % (origin.url("/echo").encode(), fields))
    status, _, body = split_response(raw)
    assert status == 400, body
    assert origin.seen == [] and lt.server.stats["internal_errors"] == 0
    still_serves(lt, origin)


def test_bad_chunked_body_gets_400(proxy, origin):
    lt = proxy()
    raw = raw_request(lt.port, b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\xb2\r\nabc\r\n0\r\n\r\n"
                      % origin.url("/echo").encode())
    assert split_response(raw)[0] == 400
    still_serves(lt, origin)


def test_request_pipelined_after_a_chunked_body_is_answered(proxy, origin):
    lt = proxy()
    data = (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") % (origin.url("/echo").encode(),
                                                                          origin.url("/ok").encode())
    got = responses(raw_request(lt.port, data, timeout=5))
    assert [(s, b) for s, _, b in got] == [(200, b"got:hello"), (200, b"fine")]


def test_loop_guard_normalises_addresses(proxy):
    lt = proxy()  # even with loopback origins allowed, this proxy's own port is a loop
    names = [b"127.1", b"127.0.0.1", b"[::ffff:127.0.0.1]", b"2130706433", b"0x7f.0.0.1", b"localhost",
             b"127.000.000.001"]
    for name in names:
        t0 = time.monotonic()
        raw = raw_request(lt.port, b"GET http://%s:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % (name, lt.port))
        assert split_response(raw)[0] == 508, name
        assert time.monotonic() - t0 < 3
    assert lt.server.stats["connections"] == len(names)  # it never connected to itself
    tp = proxy(mode="transparent")
    for name in (b"127.1", b"[::ffff:127.0.0.1]", b"2130706433"):
        raw = raw_request(tp.port, b"GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (name, tp.port))
        assert split_response(raw)[0] == 508, name


def test_loop_through_another_address_is_caught_by_via(proxy, origin):
    lt = proxy()
    token = lt.server._via
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nVia: 1.1 %s\r\n\r\n" % (origin.url("/ok").encode(),
                                                                                      token.encode()))
    assert split_response(raw)[0] == 508 and origin.seen == []
    still_serves(lt, origin)
    assert origin.seen[0][2]["via"] == "1.1 " + token


def test_loopback_and_link_local_upstreams_refused_by_default(proxy, origin):
    lt = proxy(allow_loopback_upstream=False)
    for host in (b"127.0.0.1:%d" % origin.port, b"localhost:%d" % origin.port, b"127.1:%d" % origin.port,
                 b"[::1]:%d" % origin.port, b"169.254.169.254", b"[fe80::1]", b"0.0.0.0:%d" % origin.port,
                 b"224.0.0.1"):
        raw = raw_request(lt.port, b"GET http://%s/ok HTTP/1.1\r\nHost: x\r\n\r\n" % host)
        status, _, body = split_response(raw)
        assert status == 403, (host, body)
    assert origin.seen == [] and lt.server.stats["refused_upstreams"] == 8
    assert split_response(raw_request(lt.port, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n"))[0] == 403


def test_clients_outside_the_configured_networks_are_refused(proxy, origin):
    lt = proxy(clients=["10.0.0.0/8", "192.168.0.0/16"])
    status, _, body = split_response(raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                                 % origin.url("/ok").encode()))
    assert status == 403 and origin.seen == [] and lt.server.stats["refused_clients"] == 1
    still_serves(proxy(), origin)  # the default list includes loopback


def test_netpolicy_units():
    nets = ClientNetworks()
    assert nets.allows("192.168.1.7") and nets.allows("::ffff:10.1.2.3") and nets.allows("fd00::5")
    assert not nets.allows("8.8.8.8") and not nets.allows("2001:db8::1") and not nets.allows("::ffff:8.8.8.8")
    assert ClientNetworks(None).allows("8.8.8.8")
    assert normal_ip("::ffff:127.0.0.1") == normal_ip("127.0.0.1")
    listen = [(normal_ip("0.0.0.0"), 3128)]
    assert upstream_refusal(normal_ip("127.0.0.5"), 3128, listen, True)[0] == 508
    assert upstream_refusal(normal_ip("192.168.1.1"), 80, [(normal_ip("192.168.1.1"), 3128)], False)[0] == 403
    assert upstream_refusal(normal_ip("192.168.1.1"), 80, [(normal_ip("192.168.1.1"), 3128)], True) is None
    assert upstream_refusal(normal_ip("93.184.216.34"), 80, listen, False) is None
    assert upstream_refusal(normal_ip("10.0.0.9"), 80, listen, False) is None  # LAN origins are fine


def test_slow_header_sender_is_cut_off(proxy, origin):
    from agent.intake.proxy.server import ProxyLimits
    lt = proxy(limits=ProxyLimits(head_timeout=0.5))
    s = socket.create_connection(("127.0.0.1", lt.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    for _ in range(4):
        time.sleep(0.2)
        try:
            s.sendall(b"X: y\r\n")
        except OSError:
            break
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3
    assert lt.server.stats["head_timeouts"] == 1


def test_a_wildcard_listener_refuses_every_address_of_the_box(tmp_path):
    # listening on 0.0.0.0, the proxy knows its LAN addresses too: a gateway's admin page there
    # (192.168.1.1:80 on a router) is no upstream, and its own port there is a loop
    from agent.intake.proxy.server import host_addresses
    fib = tmp_path / "fib_trie"
    fib.write_text("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.168.1.1\n        /32 host LOCAL\n"
                   "     |-- 192.168.1.255\n        /32 link BROADCAST\n")
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("fd000000000000000000000000000002 04 40 00 82     eth0\n")
    got = host_addresses(str(fib), str(inet6))
    assert got == [normal_ip("192.168.1.1"), normal_ip("fd00::2")]
    listen = [(normal_ip("0.0.0.0"), 3128)] + [(a, 3128) for a in got if a.version == 4]
    assert upstream_refusal(normal_ip("192.168.1.1"), 80, listen, False)[0] == 403
    assert upstream_refusal(normal_ip("192.168.1.1"), 3128, listen, True)[0] == 508
    assert upstream_refusal(normal_ip("192.168.1.7"), 80, listen, False) is None  # other LAN hosts are fine
    assert host_addresses(str(tmp_path / "none"), str(tmp_path / "none6")) == []  # no /proc: nothing, no error


def test_the_live_wildcard_listener_knows_this_box(proxy):
    from agent.intake.proxy.server import host_addresses
    lt = proxy(allow_loopback_upstream=False, listen_host="0.0.0.0")
    mine = [a for a in host_addresses() if a.version == 4 and not a.is_loopback]
    for addr in mine[:2]:
        raw = raw_request(lt.port, b"GET http://%s:9/x HTTP/1.1\r\nHost: x\r\n\r\n" % str(addr).encode())
        assert split_response(raw)[0] == 403, addr
