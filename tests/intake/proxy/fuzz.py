"""Mutation fuzzing of the HTTP/1 parser and the proxy's request/response handling (no sockets).

``run(cases, seed)`` -> a report dict: cases, exceptions, hangs, unanswered, seconds, and a few
examples of each failure. Deterministic for a seed. Three kinds of case, in turn:

  parser  parse_head / body_framing / parse_authority / ChunkedDecoder / BoundedDecoder fed mutated
          bytes; anything but HttpError / DecodeError is an exception.
  request a mutated client byte stream served by one ProxyServer through in-memory streams, against
          an in-memory origin answering a valid response.
  response a valid request against an in-memory origin answering a mutated response.

Proxy cases are bounded by ``case_timeout`` (a hang if exceeded); an exception is anything escaping
``serve_connection``, the server's ``internal_errors`` counter, or an error the event loop reports.
"Unanswered" counts request cases where the client sent a complete head and got no bytes back.
After the run, the same server must answer a valid request correctly (``after_ok``) and hold
no connection or buffered byte.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import gzip
import logging
import random
import re
import time
import zlib

from agent.intake import Decision
from agent.intake.http1 import ChunkedDecoder, HttpError, body_framing, parse_authority, parse_head
from agent.intake.coding import BoundedDecoder, DecodeError
from agent.intake.proxy.server import ProxyLimits, ProxyServer

MARKER = b"GW-TEST-BLOCK-MARKER"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
LISTED = JPEG + MARKER

NUMBERS = [b"0", b"00", b"-1", b"+1", b"1e3", b"0x10", b"99999999999999999999", b"18446744073709551616",
           b"\xb2", b"\xb9\xb2", "\u0662".encode(), "\uff15".encode(), b" 5", b"5 ", b"5,5", b"5, 6", b"",
           b"65536", b"99999", b"4294967296", b"7fffffffffffffff", b"ffffffffffffffff", b"1.5"]


class Allow:
    """Blocks bodies with MARKER, like the tests' MarkerInspector, without recording."""

    def inspect(self, body, content_type=None, url=None):
        return Decision("block" if MARKER in body else "allow", "fuzz", None, url)


class InlineExecutor(concurrent.futures.Executor):
    """Runs the inspector at once (no threads: the fuzz loop stays deterministic and fast)."""

    def submit(self, fn, *args, **kwargs):
        fut = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


class MemWriter:
    """Enough of asyncio.StreamWriter for the proxy."""

    def __init__(self, peer=("192.168.1.20", 50000)):
        self.data = bytearray()
        self.closed = False
        self.peer = peer

    def write(self, data):
        if not self.closed:
            self.data += data

    async def drain(self):
        await asyncio.sleep(0)

    def can_write_eof(self):
        return True

    def write_eof(self):
        pass

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    async def wait_closed(self):
        return None

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default


def feed(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=64 * 1024)
    r.feed_data(data)
    r.feed_eof()
    return r


class FuzzProxy(ProxyServer):
    """A ProxyServer whose upstream is in memory: ``next_response`` is what the origin says."""

    next_response = b""

    async def _resolve(self, host, port):
        return [(2, "192.0.2.10")]  # TEST-NET-1: allowed by policy, never contacted

    async def _connect(self, addr, port):
        self.upstream_writer = MemWriter()
        return feed(self.next_response), self.upstream_writer


def requests_seed():
    h = b"Host: origin.test\r\n"
    return [
        b"GET http://origin.test/a.jpg HTTP/1.1\r\nHost: origin.test\r\nAccept: image/*\r\nConnection: close\r\n\r\n",
        b"GET http://origin.test/a HTTP/1.1\r\n" + h + b"\r\nGET http://origin.test/b HTTP/1.1\r\n" + h
        + b"Connection: close\r\n\r\n",
        b"POST http://origin.test/p HTTP/1.1\r\n" + h + b"Content-Length: 5\r\n\r\nhello",
        b"POST http://origin.test/p HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET http://origin.test/n HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n",
        b"HEAD http://origin.test/a HTTP/1.0\r\n\r\n",
        b"GET http://origin.test:8080/x?y=1 HTTP/1.1\r\n" + h + b"Range: bytes=0-10\r\nAccept-Encoding: gzip, br\r\n\r\n",
        b"GET http://[2001:db8::1]:81/ HTTP/1.1\r\nHost: [2001:db8::1]:81\r\nExpect: 100-continue\r\n\r\n",
        b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n",
        b"GET http://127.1:3128/ HTTP/1.1\r\n" + h + b"\r\n",
        b"PUT http://origin.test/u HTTP/1.1\r\n" + h + b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    ]


def responses_seed():
    gz = gzip.compress(LISTED)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(JPEG[i:i + 300]), JPEG[i:i + 300]) for i in range(0, len(JPEG), 300))
    return [
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(JPEG) + JPEG,
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(LISTED) + LISTED,
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
        % len(gz) + gz,
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Encoding: deflate\r\n\r\n"
        + zlib.compress(LISTED),
        b"HTTP/1.1 206 Partial Content\r\nContent-Type: image/jpeg\r\nContent-Range: bytes 0-9/%d\r\n"
        b"Content-Length: 10\r\n\r\n" % len(JPEG) + JPEG[:10],
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>hello</html>",
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd",
    ]


_NUM = re.compile(rb"[0-9]+")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random mutations of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert bytes (interesting ones)
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.choice([b"\r\n", b"\n", b"\r", b"\0", b" ", b":", b",", b"\xff", b"\xb2", b"[", b"]",
                                 b"\r\n\r\n", bytes([rng.randrange(256)])])
        elif op == 2 and b:  # delete a range
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 8)]
        elif op == 3:  # duplicate a header line
            lines = bytes(b).split(b"\r\n")
            if len(lines) > 2:
                j = rng.randrange(1, len(lines) - 1)
                lines.insert(j, lines[j])
                b = bytearray(b"\r\n".join(lines))
        elif op == 4:  # a number edge case
            nums = list(_NUM.finditer(bytes(b)))
            if nums:
                m = rng.choice(nums)
                b[m.start():m.end()] = rng.choice(NUMBERS)
        elif op == 5 and b:  # truncation
            b = b[:rng.randrange(len(b))]
        elif op == 6:  # an extra header with a hostile value
            pos = bytes(b).find(b"\r\n")
            if pos > 0:
                name = rng.choice([b"Content-Length", b"Transfer-Encoding", b"Host", b"Connection", b"Range",
                                   b"Content-Encoding", b"Expect", b"Via", b"Content-Range"])
                value = rng.choice(NUMBERS + [b"chunked", b"chunked, identity", b"gzip", b"close", b"a:xyz",
                                              b"[::1", b"bytes=0-1,2-3", b"100-continue", b"x" * 300])
                b[pos + 2:pos + 2] = name + b": " + value + b"\r\n"
        elif op == 7:  # CRLF -> LF somewhere
            s = bytes(b)
            idx = [m.start() for m in re.finditer(b"\r\n", s)]
            if idx:
                i = rng.choice(idx)
                del b[i]
        elif op == 8 and b:  # repeat a slice (long lines, many chunks)
            i = rng.randrange(len(b))
            b[i:i] = bytes(b[i:i + rng.randint(1, 16)]) * rng.randint(2, 200)
        else:  # case change of a header name
            s = bytes(b)
            b = bytearray(s.replace(b"Content-", b"cOnTeNt-", 1) if rng.random() < 0.5 else s.upper())
    return bytes(b)


def parser_case(rng: random.Random, req_seeds, res_seeds) -> None:
    """One parser case; raises only on a bug (anything but HttpError / DecodeError)."""
    kind = rng.randrange(5)
    try:
        if kind in (0, 1):
            data = mutate(rng, rng.choice(req_seeds if kind == 0 else res_seeds))
            end = data.find(b"\r\n\r\n")
            head = parse_head(data[:end + 4] if end >= 0 else data + b"\r\n\r\n", "request" if kind == 0 else "response")
            body_framing(head, request=kind == 0)
            if kind == 1:
                head.status
            for value in (head.get("host"), head.get("content-length")):
                if value is not None:
                    parse_authority(value)
        elif kind == 2:
            parse_authority(mutate(rng, rng.choice([b"origin.test:8080", b"[2001:db8::1]:81", b"127.0.0.1",
                                                    b"a.b.c"])).decode("latin-1"))
        elif kind == 3:
            data = mutate(rng, b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n")
            dec = ChunkedDecoder()
            cut = rng.randrange(len(data) + 1)
            dec.feed(data[:cut])
            dec.feed(data[cut:])
        else:
            blob = mutate(rng, gzip.compress(LISTED) if rng.random() < 0.5 else zlib.compress(LISTED))
            dec = BoundedDecoder(rng.choice(["gzip", "deflate"]), rng.choice([10, 1000, 100000]))
            dec.push(blob)
            while dec.pull(rng.choice([1, 100, 65536])):
                pass
    except (HttpError, DecodeError):
        pass


async def proxy_case(server: FuzzProxy, client: bytes, origin: bytes, timeout: float):
    """Serve one client stream; (outcome, answer bytes): 'ok', 'hang' or 'exception:<type>'."""
    server.next_response = origin
    writer = MemWriter()
    before = server.stats["internal_errors"]
    try:
        await asyncio.wait_for(server._accept(feed(client), writer), timeout)
    except asyncio.TimeoutError:
        return "hang", bytes(writer.data)
    except Exception as exc:
        return "exception:%s" % type(exc).__name__, bytes(writer.data)
    if server.stats["internal_errors"] != before:
        return "exception:internal", bytes(writer.data)
    return "ok", bytes(writer.data)


def make_server() -> FuzzProxy:
    limits = ProxyLimits(max_scan_bytes=64 * 1024, max_held_bytes=1 << 20, idle_timeout=0.5, head_timeout=0.5,
                         read_timeout=0.5, connect_timeout=0.5, scan_timeout=1.0, connect_ports=None)
    return FuzzProxy(Allow(), limits=limits, executor=InlineExecutor())


async def _run(cases: int, seed: int, case_timeout: float) -> dict:
    rng = random.Random(seed)
    req_seeds, res_seeds = requests_seed(), responses_seed()
    server = make_server()
    server._listen_addrs = []
    loop_errors = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx.get("message")))
    report = {"cases": 0, "parser_cases": 0, "request_cases": 0, "response_cases": 0, "exceptions": 0,
              "hangs": 0, "unanswered": 0, "examples": []}
    statuses = collections.Counter()
    t0 = time.monotonic()
    for i in range(cases):
        report["cases"] += 1
        kind = i % 3
        if kind == 0:
            report["parser_cases"] += 1
            try:
                parser_case(rng, req_seeds, res_seeds)
            except Exception as exc:
                report["exceptions"] += 1
                if len(report["examples"]) < 10:
                    report["examples"].append(("parser", i, "%s: %s" % (type(exc).__name__, exc)))
            continue
        if kind == 1:
            report["request_cases"] += 1
            client, origin = mutate(rng, rng.choice(req_seeds)), res_seeds[0]
        else:
            report["response_cases"] += 1
            client, origin = req_seeds[0], mutate(rng, rng.choice(res_seeds))
        outcome, answer = await proxy_case(server, client, origin, case_timeout)
        m = re.match(rb"HTTP/1\.1 ([0-9]{3})", answer)
        statuses[("request" if kind == 1 else "response", m.group(1).decode() if m else "-")] += 1
        if outcome == "hang":
            report["hangs"] += 1
        elif outcome != "ok":
            report["exceptions"] += 1
        elif kind == 1 and b"\r\n\r\n" in client.lstrip(b"\r\n") and not answer:
            report["unanswered"] += 1
            outcome = "unanswered"
        if outcome != "ok" and len(report["examples"]) < 10:
            report["examples"].append((outcome, i, client[:200], origin[:200]))
    report["statuses"] = dict(sorted(statuses.items()))
    report["exceptions"] += len(loop_errors)
    report["loop_errors"] = loop_errors[:5]
    # the same server still answers a valid request correctly, and holds nothing
    outcome, answer = await proxy_case(server, req_seeds[0], res_seeds[0], case_timeout)
    body = res_seeds[0].partition(b"\r\n\r\n")[2]
    report["after_ok"] = (outcome == "ok" and answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(body))
    outcome, answer = await proxy_case(server, req_seeds[0], res_seeds[1], case_timeout)
    report["after_ok"] = report["after_ok"] and answer.startswith(b"HTTP/1.1 403 ")
    report["held_after"] = server.held
    report["active_after"] = server.active_connections
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report


def run(cases: int = 1500, seed: int = 1, case_timeout: float = 2.0) -> dict:
    """Run ``cases`` fuzz cases with ``seed`` on a fresh event loop; the report dict."""
    quiet = logging.getLogger("gatewatch")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the proxy logs every refusal; a fuzz run makes thousands
    try:
        return asyncio.run(_run(cases, seed, case_timeout))
    finally:
        quiet.setLevel(level)


def run_live(cases: int = 300, seed: int = 1, case_timeout: float = 5.0) -> dict:
    """Mutated requests and origin responses through a real ProxyServer on 127.0.0.1 (sockets).

    Every case is a fresh connection bounded by ``case_timeout`` (a hang beyond it); afterwards a
    valid request must get the right answer and the server must hold nothing.
    """
    import socket

    from tests.intake.icap.support import LoopThread
    from tests.intake.proxy.origins import ScriptedOrigin, raw_request, split_response

    rng = random.Random(seed)
    state = {"raw": b""}
    origin = ScriptedOrigin({"/m": lambda h, b: (state["raw"],),
                             "/ok.jpg": lambda h, b: (200, [("Content-Type", "image/jpeg")], JPEG),
                             "/listed.jpg": lambda h, b: (200, [("Content-Type", "image/jpeg")], LISTED)})
    base = "http://127.0.0.1:%d" % origin.port
    limits = ProxyLimits(idle_timeout=1.0, head_timeout=1.0, read_timeout=1.0, connect_timeout=1.0)
    quiet = logging.getLogger("gatewatch")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    lt = LoopThread(ProxyServer(Allow(), limits=limits, allow_loopback_upstream=True))
    req_seeds = [s.replace(b"http://origin.test", base.encode()).replace(b"origin.test", b"127.0.0.1:%d" % origin.port)
                 for s in requests_seed()]
    res_seeds = responses_seed()
    report = {"cases": 0, "hangs": 0, "exceptions": 0, "examples": []}
    t0 = time.monotonic()
    try:
        for i in range(cases):
            report["cases"] += 1
            if i % 2:
                client = mutate(rng, rng.choice(req_seeds))
            else:
                state["raw"] = mutate(rng, rng.choice(res_seeds))
                client = b"GET %s/m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % base.encode()
            started = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", lt.port), timeout=case_timeout)
                s.sendall(client)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    if time.monotonic() - started > case_timeout:
                        raise socket.timeout()
                s.close()
            except socket.timeout:
                report["hangs"] += 1
                if len(report["examples"]) < 5:
                    report["examples"].append(("hang", i, client[:200]))
            except OSError:
                pass  # a reset after an error answer is fine
        report["exceptions"] = lt.server.stats["internal_errors"]
        ok = split_response(raw_request(lt.port, b"GET %s/ok.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                        % base.encode()))
        bad = split_response(raw_request(lt.port, b"GET %s/listed.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                         % base.encode()))
        report["after_ok"] = ok[0] == 200 and ok[2] == JPEG and bad[0] == 403
        deadline = time.monotonic() + 3
        while lt.server.active_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        report["held_after"] = lt.server.held
        report["active_after"] = lt.server.active_connections
    finally:
        lt.stop()
        origin.stop()
        quiet.setLevel(level)
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report
