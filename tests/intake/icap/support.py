"""Helpers for ICAP and proxy tests: a marker inspector, a server on a thread, raw ICAP messages."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from agent.intake import Decision, Inspector

MARKER = b"GW-TEST-BLOCK-MARKER"
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


class MarkerInspector(Inspector):
    """Blocks bodies that contain MARKER; records what it saw. Stands in for the scanner."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.seen = []
        self.delay = delay
        self.fail = fail

    def inspect(self, body, content_type=None, url=None):
        self.seen.append((len(body), content_type, url))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("scanner exploded")
        if MARKER in body:
            return Decision("block", "match", None, url)
        return Decision("allow", "clean", None, url)


class LoopThread:
    """An asyncio loop on a thread running one server object (IcapServer or ProxyServer)."""

    def __init__(self, server, host="127.0.0.1"):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(server.start(host, 0))
        self.port = server.port

    def call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def loop_threads(default_inspector, build):
    """A fixture body: yields make(inspector=None, **kw) -> a started LoopThread (``build(inspector, **kw)``,
    with ``.inspector`` set); every one it started stops after the test."""
    started = []

    def make(inspector=None, **kw):
        inspector = inspector or default_inspector()
        lt = build(inspector, **kw)
        lt.inspector = inspector
        started.append(lt)
        return lt

    yield make
    for lt in started:
        lt.stop()


def chunked(data: bytes, size: int = 8192) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out


REQ_HDR = (b"GET http://origin.test/pics/a.jpg HTTP/1.1\r\nHost: origin.test\r\n"
           b"Accept: image/avif,image/webp,*/*\r\n\r\n")


def res_hdr(ctype: str, length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype.encode(), length)


def respmod(body: bytes, ctype: str = "image/jpeg", preview=None, allow204=True, keep_alive=True,
            service="/respmod", req_hdr=REQ_HDR):
    """(first, rest): what a client sends before and after a 100 Continue."""
    rh = res_hdr(ctype, len(body))
    head = [b"RESPMOD icap://127.0.0.1/%s ICAP/1.0" % service.lstrip("/").encode(), b"Host: 127.0.0.1"]
    head.append(b"Encapsulated: req-hdr=0, res-hdr=%d, res-body=%d" % (len(req_hdr), len(req_hdr) + len(rh)))
    if allow204:
        head.append(b"Allow: 204")
    if preview is not None:
        head.append(b"Preview: %d" % preview)
    if not keep_alive:
        head.append(b"Connection: close")
    msg = b"\r\n".join(head) + b"\r\n\r\n" + req_hdr + rh
    if preview is None:
        return msg + chunked(body) + b"0\r\n\r\n", b""
    if len(body) <= preview:
        return msg + chunked(body) + b"0; ieof\r\n\r\n", b""
    return msg + chunked(body[:preview]) + b"0\r\n\r\n", chunked(body[preview:]) + b"0\r\n\r\n"


def connect(port: int, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


_LEFTOVER = {}  # bytes read past one response, per socket


def read_icap_response(sock: socket.socket):
    """Read one ICAP response: (status, icap fields dict, encapsulated HTTP heads, de-chunked body)."""
    buf = _LEFTOVER.pop(sock.fileno(), b"")
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a response head: %r" % buf)
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        fields[k.decode().lower()] = v.strip().decode()
    if status == 100:
        if rest:
            _LEFTOVER[sock.fileno()] = rest
        return status, fields, b"", b""
    encap = dict(
        (e.split("=")[0].strip(), int(e.split("=")[1])) for e in fields.get("encapsulated", "null-body=0").split(",")
    )
    body_key = [k for k in encap if k.endswith("body")][0]
    hdr_len = encap[body_key]
    while len(rest) < hdr_len:
        rest += sock.recv(65536)
    http_heads, rest = rest[:hdr_len], rest[hdr_len:]
    body = b""
    if body_key != "null-body":
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            line, _, rest = rest.partition(b"\r\n")
            n = int(line.split(b";")[0], 16)
            while len(rest) < n + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a chunk")
                rest += data
            if n == 0:
                break
            body += rest[:n]
            rest = rest[n + 2:]
    return status, fields, http_heads, body
