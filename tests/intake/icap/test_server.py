"""The asyncio ICAP server over loopback sockets: every RFC 3507 exchange, limits, fail-open, abuse."""

import gc
import resource
import socket
import time

import pytest

from agent.intake.icap.protocol import IcapLimits
from agent.intake.icap.server import IcapServer
from tests.intake.icap.support import (JPEG_HEAD, MARKER, MarkerInspector, connect, read_icap_response,
                                respmod)


def exchange(port, first, rest=b"", sock=None):
    sock = sock or connect(port)
    sock.sendall(first)
    status, fields, heads, body = read_icap_response(sock)
    if status == 100:
        sock.sendall(rest)
        status, fields, heads, body = read_icap_response(sock)
    return sock, status, fields, heads, body


def test_options_and_istag_follows_lists(icap):
    version = ["v1"]
    lt = icap(istag=lambda: "lists-" + version[0], limits=IcapLimits(preview=2048, max_connections=50))
    s = connect(lt.port)
    s.sendall(b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    status, f, _, _ = read_icap_response(s)
    assert status == 200 and f["istag"] == '"lists-v1"' and f["methods"] == "RESPMOD"
    assert f["preview"] == "2048" and f["allow"] == "204" and f["max-connections"] == "50"
    version[0] = "v2"
    s.sendall(b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\n\r\n")  # same persistent connection
    assert read_icap_response(s)[1]["istag"] == '"lists-v2"'
    assert lt.server.stats["options"] == 2


def test_clean_image_with_preview_is_204_after_continue(icap):
    lt = icap()
    body = JPEG_HEAD + b"c" * 20000
    s, status, f, _, _ = exchange(lt.port, *respmod(body, preview=1024))
    assert status == 204 and f["istag"]
    assert lt.inspector.seen == [(len(body), "image/jpeg", "http://origin.test/pics/a.jpg")]
    assert lt.server.stats["scanned"] == 1 and lt.server.stats["allowed"] == 1


def test_listed_image_is_replaced(icap):
    lt = icap()
    body = JPEG_HEAD + b"a" * 3000 + MARKER + b"b" * 3000
    s, status, f, heads, page = exchange(lt.port, *respmod(body, preview=1024))
    assert status == 200 and heads.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Content-Type: image/svg+xml" in heads  # an <img> request gets the placeholder
    assert b"Blocked image" in page and lt.server.stats["blocked"] == 1
    # Browser navigation (Accept: text/html) gets the explanation page.
    req = b"GET http://origin.test/x.jpg HTTP/1.1\r\nHost: origin.test\r\nAccept: text/html,*/*\r\n\r\n"
    s, status, f, heads, page = exchange(lt.port, *respmod(body, preview=1024, req_hdr=req), sock=s)
    assert status == 200 and b"text/html" in heads
    assert b"known child sexual abuse material" in page and b"origin.test" in page


def test_non_image_gets_204_right_after_preview(icap):
    lt = icap()
    body = b"<html>" + b"h" * 100000
    first, rest = respmod(body, ctype="text/html", preview=1024)
    s, status, _, _, _ = exchange(lt.port, first, b"")  # rest is never sent
    assert status == 204 and lt.inspector.seen == [] and lt.server.stats["passed_unscanned"] == 1
    # The connection is still usable: the next request on it works.
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=1024), sock=s)
    assert status == 200


def test_magic_bytes_win_over_a_lying_type(icap):
    lt = icap()
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER, ctype="application/octet-stream",
                                                    preview=64))
    assert status == 200 and lt.server.stats["blocked"] == 1


def test_ieof_preview_is_answered_without_continue(icap):
    lt = icap()
    first, rest = respmod(JPEG_HEAD + b"tiny", preview=4096)
    s = connect(lt.port)
    s.sendall(first)
    status, _, _, _ = read_icap_response(s)
    assert status == 204 and rest == b""


def test_no_allow_204_echoes_unchanged(icap):
    lt = icap()
    body = JPEG_HEAD + bytes(range(256)) * 100
    s, status, f, heads, echoed = exchange(lt.port, *respmod(body, allow204=False))
    assert status == 200 and echoed == body and heads.startswith(b"HTTP/1.1 200 OK")
    body2 = b"plain text " * 1000
    s, status, f, heads, echoed = exchange(lt.port, *respmod(body2, ctype="text/plain", allow204=False), sock=s)
    assert status == 200 and echoed == body2 and lt.inspector.seen[-1][0] == len(body)


def test_reqmod_is_answered(icap):
    lt = icap()
    from tests.intake.icap.support import REQ_HDR
    s = connect(lt.port)
    msg = (b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nAllow: 204\r\nEncapsulated: req-hdr=0, null-body=%d"
           b"\r\n\r\n" % len(REQ_HDR) + REQ_HDR)
    s.sendall(msg)
    assert read_icap_response(s)[0] == 204
    post = b"POST http://o.test/f HTTP/1.1\r\nHost: o.test\r\nContent-Length: 5\r\n\r\n"
    s.sendall(b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=%d\r\n\r\n"
              % len(post) + post + b"5\r\nhello\r\n0\r\n\r\n")
    status, _, heads, body = read_icap_response(s)
    assert status == 200 and heads == post and body == b"hello"


def test_unknown_service_and_wrong_method(icap):
    lt = icap()
    first, _ = respmod(b"x", service="/nope")
    s, status, _, _, _ = exchange(lt.port, first)
    assert status == 404
    first, _ = respmod(b"x", service="/reqmod")
    s, status, _, _, _ = exchange(lt.port, first)
    assert status == 405


def test_malformed_gets_error_then_close_and_server_lives(icap):
    lt = icap()
    s = connect(lt.port)
    s.sendall(b"RESPMOD icap://h/ ICAP/1.0\r\nEncapsulated: res-hdr=0, res-body=999\r\n\r\n"
              b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 1000)
    assert read_icap_response(s)[0] == 400
    assert s.recv(10) == b""
    assert exchange(lt.port, *respmod(JPEG_HEAD, preview=10))[1] == 204
    assert lt.server.stats["errors"] == 1


@pytest.mark.parametrize("failure", ["error", "timeout"])
def test_fail_open(icap, failure):
    insp = MarkerInspector(fail=True) if failure == "error" else MarkerInspector(delay=1.0)
    lt = icap(insp, limits=IcapLimits(scan_timeout=0.2))
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=64))
    assert status == 204  # passed although it carries the marker
    assert lt.server.stats["bypassed"] == 1
    assert lt.server.stats["errors" if failure == "error" else "timeouts"] == 1


def test_too_large_image_passes_unscanned(icap):
    lt = icap(limits=IcapLimits(max_scan_bytes=10000))
    body = JPEG_HEAD + MARKER + b"L" * 50000
    s, status, _, _, _ = exchange(lt.port, *respmod(body, preview=1024))
    assert status == 204 and lt.inspector.seen == [] and lt.server.stats["too_large"] == 1
    s, status, _, _, echoed = exchange(lt.port, *respmod(body, allow204=False), sock=s)
    assert status == 200 and echoed == body


def test_max_connections_gives_503(icap):
    lt = icap(limits=IcapLimits(max_connections=3))
    held = [connect(lt.port) for _ in range(3)]
    for h in held:  # make sure all three are being served
        h.sendall(b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\n\r\n")
        assert read_icap_response(h)[0] == 200
    extra = connect(lt.port)
    assert read_icap_response(extra)[0] == 503
    assert extra.recv(10) == b"" and lt.server.stats["rejected"] == 1
    held[0].close()
    time.sleep(0.3)
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD, preview=10))
    assert status == 204


def test_slow_client_is_cut_off(icap):
    lt = icap(limits=IcapLimits(read_timeout=0.6))
    s = connect(lt.port)
    t0 = time.monotonic()
    msg = respmod(JPEG_HEAD, preview=10)[0]
    try:
        for b in msg:  # one byte every 0.1 s: the head deadline, not the per-read timeout, must fire
            s.sendall(bytes([b]))
            time.sleep(0.1)
    except OSError:
        pass
    s.settimeout(5)
    data = b""
    try:
        while True:
            chunk = s.recv(1000)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    assert data.startswith(b"ICAP/1.0 408") and time.monotonic() - t0 < 5
    assert lt.server.stats["timeouts"] == 1


def test_idle_connections_are_closed(icap):
    lt = icap(limits=IcapLimits(idle_timeout=0.3))
    s = connect(lt.port)
    s.settimeout(5)
    assert s.recv(10) == b""  # closed by the server, no error text for a quiet keep-alive


def rss_kb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_thousands_of_idle_connections_memory_bounded(icap):
    n = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * n + 200), hard))
    lt = icap(limits=IcapLimits(max_connections=1000, idle_timeout=30))
    gc.collect()
    before = rss_kb()
    socks = []
    for i in range(n):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", lt.port))
        s.sendall(b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\nX-Half: ")  # half a head, then silence
        socks.append(s)
    deadline = time.monotonic() + 20
    while lt.server.stats["connections"] + lt.server.stats["rejected"] < n and time.monotonic() < deadline:
        time.sleep(0.1)
    grown = rss_kb() - before
    assert lt.server.active_connections <= 1000
    assert lt.server.stats["rejected"] >= n - 1000
    # Both the server and these client sockets live in this process: < 40 KB per connection overall.
    assert grown < 40 * n, grown
    # The service still answers a real client.
    for s in socks[:1500]:
        s.close()
    time.sleep(0.5)
    assert exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=64))[1] == 200
    for s in socks[1500:]:
        s.close()


def test_early_head_when_the_client_stalls_mid_body(icap):
    """Squid < 6.9 stops sending until the service answers (bug 5352): we send the head, scan, then decide."""
    lt = icap(limits=IcapLimits(stall_timeout=0.2))
    body = JPEG_HEAD + b"s" * 70000 + MARKER
    first, rest = respmod(body, preview=1024, allow204=False)
    s = connect(lt.port)
    s.sendall(first)
    assert read_icap_response(s)[0] == 100
    s.sendall(rest[:40000])  # then silence, like a stalled Squid
    s.settimeout(5)
    head = b""
    while b"HTTP/1.1 200 OK" not in head or not head.endswith(b"\r\n\r\n"):
        head += s.recv(65536)
    assert head.startswith(b"ICAP/1.0 200 OK") and b"res-body=" in head
    assert b"Content-Length" not in head.split(b"HTTP/1.1", 1)[1] and b"Content-Type: image/jpeg" in head
    s.sendall(rest[40000:])  # the client resumes once it sees the head
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        data += s.recv(65536)
    from agent.intake.blockpage import PLACEHOLDER_PNG
    assert PLACEHOLDER_PNG in data and MARKER not in data
    assert lt.server.stats["early_heads"] == 1 and lt.server.stats["blocked"] == 1


@pytest.mark.parametrize("listed", [False, True])
def test_early_head_always(icap, listed):
    from agent.intake.blockpage import PLACEHOLDER_PNG
    lt = icap(limits=IcapLimits(early_head="always"))
    body = JPEG_HEAD + b"w" * 5000 + (MARKER if listed else b"")
    s, status, _, heads, got = exchange(lt.port, *respmod(body, preview=1024, allow204=False))
    assert status == 200 and heads.startswith(b"HTTP/1.1 200 OK") and b"Content-Length" not in heads
    assert got == (PLACEHOLDER_PNG if listed else body)


def test_bad_early_head_mode_is_refused():
    from agent.core.errors import ConfigError
    with pytest.raises(ConfigError, match="early_head"):
        IcapServer(MarkerInspector(), limits=IcapLimits(early_head="sometimes"))


def test_pause_at_squids_buffer_size_is_a_stall_at_once(icap):
    """Squid 5.7 stops at exactly 65535 body bytes; that pause gets the early head in ms, not stall_timeout."""
    lt = icap(limits=IcapLimits(stall_timeout=5.0))
    body = JPEG_HEAD + b"q" * 100000
    first, rest = respmod(body, preview=4096, allow204=False)
    s = connect(lt.port)
    s.sendall(first)
    assert read_icap_response(s)[0] == 100
    sent_rest = 65535 - 4096
    from tests.intake.icap.support import chunked
    s.sendall(chunked(body[4096:65535]))
    t0 = time.monotonic()
    s.settimeout(3)
    head = b""
    while b"\r\n\r\n" not in head.split(b"ICAP/1.0 200 OK", 1)[-1]:
        head += s.recv(65536)
    assert time.monotonic() - t0 < 1.0 and head.startswith(b"ICAP/1.0 200 OK")
    s.sendall(chunked(body[65535:]) + b"0\r\n\r\n")
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        data += s.recv(65536)
    assert body in head + data and lt.server.stats["early_heads"] == 1 and sent_rest


def test_zero_preview_of_untyped_body_reads_first_bytes(icap):
    lt = icap()
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER + b"z" * 500, ctype="application/octet-stream",
                                                    preview=0))
    assert status == 200 and lt.server.stats["blocked"] == 1
    body = b"PK\x03\x04 not an image " * 100
    s, status, _, _, _ = exchange(lt.port, *respmod(body, ctype="application/octet-stream", preview=0), sock=s)
    assert status == 204 and lt.server.stats["passed_unscanned"] == 1


def test_garbage_never_kills_the_service(icap):
    import random
    lt = icap(limits=IcapLimits(read_timeout=0.5))
    rnd = random.Random(7)
    seeds = [b"RESPMOD icap://h/ ICAP/1.0\r\nEncapsulated: res-hdr=0, res-body=",
             b"OPTIONS icap://h/ ICAP/1.0\r\n", respmod(JPEG_HEAD + b"a" * 300, preview=16)[0]]
    for i in range(60):
        base = rnd.choice(seeds)
        data = bytearray(base)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        s = connect(lt.port, timeout=3)
        try:
            s.sendall(bytes(data) + bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200))))
            s.settimeout(0.05)  # an answer may or may not come; the service must survive either way
            s.recv(4096)
        except OSError:
            pass
        finally:
            s.close()
    assert exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=64))[1] == 200


def test_on_block_hook_and_logs_carry_no_client_data(icap, caplog):
    import logging
    calls = []
    lt = icap(on_block=lambda decision, host: calls.append((decision.action, decision.url, host)))
    req = (b"GET http://cdn.example/p.jpg HTTP/1.1\r\nHost: cdn.example\r\nAccept: image/*\r\n"
           b"User-Agent: UA-SECRET\r\nCookie: c=COOKIE-SECRET\r\nX-Forwarded-For: 10.9.8.7\r\n\r\n")
    with caplog.at_level(logging.DEBUG):
        s = connect(lt.port)
        client_port = str(s.getsockname()[1])
        exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=64, req_hdr=req), sock=s)
        exchange(lt.port, b"RESPMOD icap://h/ ICAP/1.0\r\nEncapsulated: res-hdr=zz\r\n\r\n", sock=s)
    assert calls == [("block", "http://cdn.example/p.jpg", "cdn.example")]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cdn.example" in text  # the hosting side may be logged
    for secret in ("UA-SECRET", "COOKIE-SECRET", "10.9.8.7", client_port, "GET http"):
        assert secret not in text, secret


def test_server_wide_budget_for_held_images(icap):
    lt = icap(limits=IcapLimits(max_held_bytes=3000))
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER + b"h" * 5000, preview=1024))
    assert status == 204 and lt.server.stats["too_large"] == 1 and lt.inspector.seen == []
    s, status, _, _, _ = exchange(lt.port, *respmod(JPEG_HEAD + MARKER, preview=1024), sock=s)
    assert status == 200
    deadline = time.monotonic() + 5
    while lt.server.held and time.monotonic() < deadline:  # released just after each answer
        time.sleep(0.01)
    assert lt.server.held == 0
