"""The built-in proxy against a loopback origin: explicit, transparent, CONNECT, blocking, limits."""

import hashlib
import http.server
import os
import socket
import threading
import time

import pytest

from agent.intake.proxy.server import ProxyLimits, ProxyServer
from tests.intake.icap.realservers import AgentProcess, Origin, curl, demo_lists, find_binary
from tests.intake.icap.support import JPEG_HEAD, MARKER, MarkerInspector


class ChunkedOrigin:
    """An origin that answers every path with a chunked image body (http.server cannot)."""

    def __init__(self, body: bytes, ctype: str = "image/jpeg"):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1000):
                    piece = body[i:i + 1000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "clean.jpg").write_bytes(JPEG_HEAD + os.urandom(200000))
    (d / "listed.jpg").write_bytes(JPEG_HEAD + b"x" * 1000 + MARKER + b"y" * 1000)
    (d / "mislabeled.bin").write_bytes(JPEG_HEAD + MARKER)
    (d / "page.txt").write_bytes(b"hello " * 5000 + MARKER)  # a marker in a non-image is never scanned
    origin = Origin(str(d))
    yield d, origin
    origin.stop()


# the proxy fixture is in conftest.py (it allows this module's loopback origins)


def raw_request(port, data: bytes, timeout=10) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def split_response(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def test_explicit_mode_passes_and_blocks(proxy, www):
    d, origin = www
    lt = proxy()
    for name in ("clean.jpg", "page.txt"):
        raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % origin.url(name).encode())
        status, head, body = split_response(raw)
        assert status == 200 and body == (d / name).read_bytes(), name
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: image/*\r\nConnection: close\r\n\r\n"
                      % origin.url("listed.jpg").encode())
    status, head, body = split_response(raw)
    assert status == 403 and b"Blocked image" in body and MARKER not in body
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
                      % origin.url("mislabeled.bin").encode())
    status, head, body = split_response(raw)
    assert status == 403 and b"known child sexual abuse material" in body
    assert lt.server.stats["blocked"] == 2 and lt.server.stats["passed_unscanned"] == 1
    assert [u for _, _, u in lt.inspector.seen] == [origin.url(n) for n in ("clean.jpg", "listed.jpg",
                                                                               "mislabeled.bin")]


def test_keep_alive_and_head(proxy, www):
    d, origin = www
    lt = proxy()
    s = socket.create_connection(("127.0.0.1", lt.port), timeout=10)
    f = s.makefile("rb")
    for name in ("clean.jpg", "listed.jpg", "page.txt"):
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: image/*\r\n\r\n" % origin.url(name).encode())
        status = int(f.readline().split()[1])
        headers = {}
        for line in iter(f.readline, b"\r\n"):
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        body = f.read(int(headers["content-length"]))
        assert status == (403 if name == "listed.jpg" else 200), name
        if status == 200:
            assert body == (d / name).read_bytes()
    s.sendall(b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % origin.url("clean.jpg").encode())
    rest = f.read()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\n")
    assert b"Content-Length: %d" % (d / "clean.jpg").stat().st_size in rest


def test_transparent_mode_routes_by_host(proxy, www):
    d, origin = www
    lt = proxy(mode="transparent")
    raw = raw_request(lt.port, b"GET /clean.jpg HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                      % origin.port)
    assert split_response(raw)[2] == (d / "clean.jpg").read_bytes()
    raw = raw_request(lt.port, b"GET /listed.jpg HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                      % origin.port)
    assert split_response(raw)[0] == 403
    # A Host naming the proxy itself would loop: refused.
    raw = raw_request(lt.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % lt.port)
    assert split_response(raw)[0] == 508
    # Absolute-form and CONNECT are explicit-proxy requests.
    assert split_response(raw_request(lt.port, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"))[0] == 405


def test_chunked_origin_image_is_scanned_and_reframed(proxy):
    body = JPEG_HEAD + os.urandom(50000)
    o = ChunkedOrigin(body)
    try:
        lt = proxy()
        raw = raw_request(lt.port, b"GET http://127.0.0.1:%d/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % o.port)
        status, head, got = split_response(raw)
        assert status == 200 and got == body and b"Content-Length: %d" % len(body) in head
        assert lt.inspector.seen[0][0] == len(body)
    finally:
        o.stop()


def test_chunked_non_image_streams_chunked(proxy):
    body = b"text " * 20000
    o = ChunkedOrigin(body, "text/plain")
    try:
        lt = proxy()
        raw = raw_request(lt.port, b"GET http://127.0.0.1:%d/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          % o.port)
        status, head, got = split_response(raw)
        assert status == 200 and b"Transfer-Encoding: chunked" in head
        from agent.intake.http1 import ChunkedDecoder
        dec = ChunkedDecoder()
        assert b"".join(dec.feed(got)) == body and dec.done
    finally:
        o.stop()


def test_connect_is_tunnelled_uninspected(proxy, www):
    d, origin = www
    # By default only port 443 may be tunnelled; this test's origin is on a random port.
    assert split_response(raw_request(proxy().port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n"
                                      % origin.port))[0] == 403
    lt = proxy(limits=ProxyLimits(connect_ports=None))
    s = socket.create_connection(("127.0.0.1", lt.port), timeout=10)
    s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % origin.port)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.sendall(b"GET /listed.jpg HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    assert out.startswith(b"HTTP/1.0 200") or out.startswith(b"HTTP/1.1 200")
    assert MARKER in out and lt.inspector.seen == [] and lt.server.stats["tunnels"] == 1


def test_fail_open_and_too_large(proxy, www):
    d, origin = www
    lt = proxy(MarkerInspector(fail=True))
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % origin.url("listed.jpg").encode())
    assert split_response(raw)[2] == (d / "listed.jpg").read_bytes() and lt.server.stats["bypassed"] == 1
    lt2 = proxy(limits=ProxyLimits(max_scan_bytes=1000))
    raw = raw_request(lt2.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % origin.url("listed.jpg").encode())
    assert split_response(raw)[2] == (d / "listed.jpg").read_bytes() and lt2.server.stats["too_large"] == 1


def test_bad_requests_get_clear_errors(proxy, www):
    d, origin = www
    lt = proxy(limits=ProxyLimits(max_head_bytes=2048, max_connections=2))
    assert split_response(raw_request(lt.port, b"NONSENSE\r\n\r\n"))[0] == 400
    assert split_response(raw_request(lt.port, b"GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 400
    assert split_response(raw_request(lt.port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 400
    big = b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n"
    assert split_response(raw_request(lt.port, big))[0] == 431
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    dead = free.getsockname()[1]
    free.close()
    raw = raw_request(lt.port, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: x\r\n\r\n" % dead)
    assert split_response(raw)[0] == 502
    held = [socket.create_connection(("127.0.0.1", lt.port)) for _ in range(2)]
    for h in held:  # mid-head, so not idle: an idle connection would be closed to make room
        h.sendall(b"GET / HTTP/1.1\r\n")
    time.sleep(0.2)
    assert split_response(raw_request(lt.port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 503
    for h in held:
        h.close()
    assert lt.server.stats["rejected"] == 1


def test_bad_mode_refused():
    from agent.core.errors import ConfigError
    with pytest.raises(ConfigError, match="explicit, transparent"):
        ProxyServer(MarkerInspector(), mode="sideways")
    with pytest.raises(ConfigError, match="pass or block"):
        ProxyServer(MarkerInspector(), undecodable_images="maybe")
    with pytest.raises(ConfigError, match="not a network"):
        ProxyServer(MarkerInspector(), clients=["10.0.0.0/8", "lan"])


@pytest.mark.slow
@pytest.mark.skipif(find_binary("curl") is None, reason="curl missing: run tests/setup/install.sh")
def test_standalone_proxy_real_scanner_and_flat_memory(tmp_path):
    """python -m agent.intake.proxy with a signed demo list; curl as the client; 50 MB streams with flat RSS."""
    from agent.hashing.samples import encode, generate_image
    www = tmp_path / "www"
    www.mkdir()
    listed = encode(generate_image(2001), "JPEG")
    clean = encode(generate_image(2002), "JPEG")
    (www / "listed.jpg").write_bytes(listed)
    (www / "clean.jpg").write_bytes(clean)
    with open(www / "big.bin", "wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(50):
            fh.write(block)
    lists_dir, pub = demo_lists(str(tmp_path), {"listed.jpg": listed})
    origin = Origin(str(www))
    agent = AgentProcess("agent.intake.proxy", lists_dir, pub, "--reload", "0", "--allow-loopback-upstream")
    try:
        proxy = "http://127.0.0.1:%d" % agent.port
        out = str(tmp_path / "out")
        status, _ = curl(proxy, origin.url("listed.jpg"), out, "-H", "Accept: text/html")
        assert status == 403 and b"known child sexual abuse material" in open(out, "rb").read()
        status, _ = curl(proxy, origin.url("clean.jpg"), out)
        assert status == 200 and open(out, "rb").read() == clean
        before = agent.rss_kb("VmHWM")
        status, size = curl(proxy, origin.url("big.bin"), out)
        grown = agent.rss_kb("VmHWM") - before
        assert status == 200 and size == 50 << 20
        assert hashlib.sha256(open(out, "rb").read()).digest() == hashlib.sha256((www / "big.bin").read_bytes()).digest()
        assert grown < 8 * 1024, "proxy peak RSS grew by %d KB for a 50 MB body" % grown
    finally:
        agent.stop()
        origin.stop()


def test_on_block_hook_and_logs_carry_no_client_data(proxy, www, caplog):
    import logging
    d, origin = www
    calls = []
    lt = proxy(on_block=lambda decision, host: calls.append((decision.url, host)))
    with caplog.at_level(logging.DEBUG):
        s = socket.create_connection(("127.0.0.1", lt.port), timeout=10)
        client_port = str(s.getsockname()[1])
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: UA-SECRET\r\nCookie: c=COOKIE-SECRET\r\n"
                  b"Connection: close\r\n\r\n" % origin.url("listed.jpg").encode())
        while s.recv(65536):
            pass
        s.close()
    assert calls == [(origin.url("listed.jpg"), "127.0.0.1")]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "blocked an image" in text
    for secret in ("UA-SECRET", "COOKIE-SECRET", client_port, "GET http"):
        assert secret not in text, secret


def test_server_wide_budget_for_held_images(proxy, www):
    d, origin = www
    lt = proxy(limits=ProxyLimits(max_held_bytes=1000))
    raw = raw_request(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                      % origin.url("listed.jpg").encode())
    assert split_response(raw)[2] == (d / "listed.jpg").read_bytes()
    assert lt.server.stats["over_budget"] == 1 and lt.server.stats["bypassed"] == 1 and lt.server.held == 0
