"""A mutation fuzzer for the ICAP intake: the parser (bytes in, events out) and the live service.

Valid OPTIONS / RESPMOD / REQMOD messages (previews, ieof, no res-hdr, pipelined pairs, images and
not) are mutated: bit flips, byte insertions and deletions, range duplication, header duplication,
number edge cases (negative, huge, non-ASCII digits, '+1', '1_0'), chunk-size garbage, truncation;
and fed in random slices. Counted per run: cases, exceptions (anything that escapes the parser or the
service), hangs (a case that does not end within its time bound). Deterministic for a seed.

Used by tests/intake/icap/test_fuzz.py (a fast run) and bench/fuzz_icap.py (the big one).
"""

from __future__ import annotations

import collections
import gc
import gzip
import logging
import random
import re
import signal
import socket
import time
from contextlib import contextmanager
from typing import List, Tuple

from agent.intake.icap import protocol as P
from tests.intake.icap.support import JPEG_HEAD, MARKER, REQ_HDR, chunked, read_icap_response, respmod

EVENT_TYPES = (P.Request, P.BodyData, P.PreviewEnd, P.BodyEnd, P.ProtocolError)

NUMBERS = [b"-1", b"0", b"00", b"+1", b"1_0", b"0x10", b"1e3", b" ", b"", b"2147483648", b"4294967296",
           b"9223372036854775808", b"9" * 40, b"\xc2\xb2", b"\xd9\xa1", b"\xef\xbc\x91", b"1\xc2\xb2", b"\xb2",
           b"1.5", b"1,2", b"65536", b"65535", b"16384", b"4096"]
INSERTS = [b"\r\n", b"\r\n\r\n", b"\n", b"\r", b";", b",", b"=", b":", b" ", b"\x00", b"\xff", b"\xc2\xb2",
           b"0", b"9", b"ieof", b"; ieof", b"Encapsulated: res-body=0\r\n", b"Preview: 0\r\n",
           b"Connection: close\r\n", b"0\r\n\r\n", b"[", b"Host: [::1\r\n"]
CHUNK_GARBAGE = [b"zz", b"-1", b"+3", b"0x3", b"ffffffffffffffffffff", b"1000000000000", b"\xd9\xa3", b"3 3",
                 b"", b";ieof", b"0;" + b"e" * 5000, b"7fffffff", b"ffffffff"]


def seeds() -> List[Tuple[bytes, bytes]]:
    """Valid exchanges: (what is sent first, what follows a 100 Continue)."""
    listed = JPEG_HEAD + b"a" * 700 + MARKER + b"b" * 700
    clean = JPEG_HEAD + b"c" * 900
    text = b"<html>" + b"t" * 600
    out = [
        (b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n", b""),
        respmod(listed, preview=64), respmod(clean, preview=64), respmod(clean, preview=4096),
        respmod(listed), respmod(text, ctype="text/html", preview=64), respmod(text, ctype="text/html"),
        respmod(listed, ctype="application/octet-stream", preview=0), respmod(clean, preview=64, allow204=False),
        respmod(listed, preview=64, keep_alive=False), respmod(b"", preview=0),
        respmod(listed, preview=64, req_hdr=b"GET /a.jpg HTTP/1.1\r\nHost: [::1\r\nAccept: text/html\r\n\r\n"),
    ]
    head = b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nAllow: 204\r\nEncapsulated: res-body=0\r\n\r\n"
    out.append((head + chunked(listed, 500) + b"0\r\n\r\n", b""))
    head = (b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nAllow: 204\r\nEncapsulated: req-hdr=0, res-body=%d\r\n"
            b"Preview: 16\r\n\r\n" % len(REQ_HDR))
    out.append((head + REQ_HDR + chunked(listed[:16]) + b"0\r\n\r\n", chunked(listed[16:]) + b"0\r\n\r\n"))
    req = b"POST /up HTTP/1.1\r\nHost: up.test\r\nContent-Length: 900\r\n\r\n"
    out.append((b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nAllow: 204\r\nEncapsulated: req-hdr=0, req-body=%d\r\n\r\n"
                % len(req) + req + chunked(clean) + b"0\r\n\r\n", b""))
    out.append((b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n"
                % len(REQ_HDR) + REQ_HDR, b""))
    gz = gzip.compress(listed)
    rh = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Encoding: gzip\r\n\r\n"
    head = (b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nAllow: 204\r\nEncapsulated: res-hdr=0, res-body=%d\r\n"
            b"Preview: 32\r\n\r\n" % len(rh))
    out.append((head + rh + chunked(gz[:32]) + b"0\r\n\r\n", chunked(gz[32:]) + b"0\r\n\r\n"))
    out.append((respmod(clean, preview=64)[0] + respmod(listed)[0], b""))  # not quite pipelined: a preview waits
    out.append((respmod(clean, preview=4096)[0] + respmod(listed, preview=4096)[0], b""))  # pipelined
    return out


def _replace_number(rng: random.Random, data: bytes) -> bytes:
    spots = [m.span() for m in re.finditer(rb"(?<=[=: ])[0-9a-fA-F]+|^[0-9a-fA-F]+(?=\r\n)|(?<=\n)[0-9a-fA-F]+(?=[\r;])",
                                          data[:4096], re.M)]
    if not spots:
        return data
    a, b = rng.choice(spots)
    return data[:a] + rng.choice(NUMBERS) + data[b:]


def _chunk_garbage(rng: random.Random, data: bytes) -> bytes:
    spots = [m.span(1) for m in re.finditer(rb"\r\n([0-9a-f]+)(?:; ieof)?\r\n", data)]
    if not spots:
        return data
    a, b = rng.choice(spots)
    return data[:a] + rng.choice(CHUNK_GARBAGE) + data[b:]


def _dup_header(rng: random.Random, data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    lines = data[:end].split(b"\r\n")
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    line = lines[i]
    if rng.random() < 0.5:  # same name, other value
        name = line.split(b":", 1)[0]
        line = name + b": " + rng.choice(NUMBERS + [b"res-body=0", b"null-body=0", b"req-hdr=0, res-body=5"])
    lines.insert(rng.randrange(1, len(lines) + 1), line)
    return b"\r\n".join(lines) + data[end:]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random mutations of ``data``."""
    for _ in range(rng.choice((1, 1, 2, 3))):
        if not data:
            data = rng.choice(INSERTS)
            continue
        op = rng.randrange(10)
        i = rng.randrange(len(data))
        if op == 0:  # bit flips
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                j = rng.randrange(len(b))
                b[j] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif op == 1:
            data = data[:i] + rng.choice(INSERTS + [bytes([rng.randrange(256)])]) + data[i:]
        elif op == 2:
            data = data[:i] + data[i + rng.randint(1, 16):]
        elif op == 3:
            j = min(len(data), i + rng.randint(1, 64))
            data = data[:j] + data[i:j] * rng.randint(1, 4) + data[j:]
        elif op == 4:
            data = _dup_header(rng, data)
        elif op in (5, 6):
            data = _replace_number(rng, data)
        elif op == 7:
            data = _chunk_garbage(rng, data)
        elif op == 8:
            data = data[:i]  # truncation
        else:
            data = data[:i] + rng.choice((b"\xc2\xb2", b"\xd9\xa1", b"\xe0\xa5\xa7", b"\xef\xbc\x91")) + data[i:]
    return data


def case(rng: random.Random, pool) -> Tuple[bytes, bytes]:
    first, rest = rng.choice(pool)
    if rng.random() < 0.85:
        first = mutate(rng, first)
    elif rest:
        rest = mutate(rng, rest)
    else:
        first = mutate(rng, first)
    return first, rest


class Hang(Exception):
    pass


@contextmanager
def time_bound(seconds: float):
    """Raise Hang in the main thread after ``seconds`` (SIGALRM; a no-op bound where unavailable)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def drive_parser(rng: random.Random, first: bytes, rest: bytes, limits: P.IcapLimits) -> str:
    """Feed one case to a fresh IcapConnection the way the server would; assert the invariants.
    Returns how it ended: "error" (a ProtocolError), "complete" (requests parsed, idle) or "partial"."""
    conn = P.IcapConnection(limits)
    bound = limits.max_head_bytes + limits.max_http_head_bytes + 65536
    data = first
    later = rest
    pos = 0
    for _ in range(10000):
        if pos >= len(data):
            if conn.state == "preview-wait":
                if rng.random() < 0.5:
                    conn.continue_after_preview()
                    data, pos, later = data + later, pos, b""
                    if pos >= len(data):
                        break
                else:
                    events = conn.finish_preview()
                    _check(conn, events, bound)
                    continue
            else:
                break
        step = rng.choice((1, 3, 17, 256, 65536))
        events = conn.receive(data[pos:pos + step])
        pos += step
        _check(conn, events, bound)
        if any(isinstance(e, P.ProtocolError) for e in events):
            return "error"
        if conn.state == "closed":
            break
    return "complete" if conn.idle or conn.state == "closed" else "partial"


def _check(conn, events, bound) -> None:
    for ev in events:
        if not isinstance(ev, EVENT_TYPES):
            raise AssertionError("unexpected event %r" % (ev,))
        if isinstance(ev, P.ProtocolError):
            if not (ev.status in P.REASONS and ev.status >= 400 and conn.state == "closed"):
                raise AssertionError("bad ProtocolError %r" % (ev,))
            if not all(32 <= ord(c) < 127 for c in ev.message):
                raise AssertionError("non-printable error text %r" % ev.message)
    if len(conn._buf) > bound:
        raise AssertionError("parser buffers %d bytes" % len(conn._buf))


def fuzz_parser(cases: int, seed: int, case_seconds: float = 2.0) -> dict:
    """Run ``cases`` parser cases; return counts and the first few failures."""
    rng = random.Random(seed)
    pool = seeds()
    limits = P.IcapLimits()
    out = {"cases": 0, "exceptions": 0, "hangs": 0, "failures": [], "outcomes": collections.Counter(),
           "max_case_seconds": 0.0}
    for n in range(cases):
        first, rest = case(rng, pool)
        out["cases"] += 1
        t0 = time.perf_counter()
        try:
            with time_bound(case_seconds):
                out["outcomes"][drive_parser(random.Random(n ^ seed), first, rest, limits)] += 1
        except Hang:
            out["hangs"] += 1
            out["failures"].append(("hang", n, first[:200]))
        except Exception as exc:  # everything counts: the parser must only ever answer with events
            out["exceptions"] += 1
            if len(out["failures"]) < 10:
                out["failures"].append((type(exc).__name__ + ": " + str(exc)[:200], n, first[:200]))
        out["max_case_seconds"] = max(out["max_case_seconds"], time.perf_counter() - t0)
    return out


# ---- the live service ---------------------------------------------------------------------------

LISTED = JPEG_HEAD + b"a" * 3000 + MARKER + b"b" * 3000
CLEAN = JPEG_HEAD + b"c" * 5000


def check_service(port: int) -> None:
    """The service answers valid requests correctly (OPTIONS, a listed image, a clean one)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"OPTIONS icap://127.0.0.1/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_icap_response(s)[0] == 200
        for body, want in ((LISTED, 200), (CLEAN, 204)):
            first, rest = respmod(body, preview=1024)
            s.sendall(first)
            status, _, heads, _ = read_icap_response(s)
            if status == 100:
                s.sendall(rest)
                status, _, heads, _ = read_icap_response(s)
            assert status == want, (status, want)
            if want == 200:
                assert heads.startswith(b"HTTP/1.1 403")
    finally:
        s.close()


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Hang()
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise Hang()
        except (ConnectionError, OSError):
            return got
        if not data:
            return got
        got += data


def live_case(port: int, first: bytes, rest: bytes, case_seconds: float) -> str:
    """Send one case; the service must answer or close within ``case_seconds`` after our EOF.
    Returns the first final ICAP status it answered ("-" for a close without an answer)."""
    deadline = time.monotonic() + case_seconds
    s = socket.create_connection(("127.0.0.1", port), timeout=case_seconds)
    try:
        try:
            s.sendall(first)
            if rest:
                s.settimeout(0.2)
                try:
                    head = s.recv(65536)
                except socket.timeout:
                    head = b""
                if head.startswith(b"ICAP/1.0 100"):
                    s.sendall(rest)
            else:
                head = b""
            s.shutdown(socket.SHUT_WR)
        except (ConnectionError, OSError):
            return "reset"  # the service closed on us early: an answer of sorts, and not a hang
        got = head + _read_until_closed(s, deadline)
    finally:
        s.close()
    for m in re.finditer(rb"ICAP/1.0 (\d{3}) ", got):
        if m.group(1) != b"100":
            return m.group(1).decode()
    return "-"


def fuzz_live(cases: int, seed: int, case_seconds: float = 5.0, check_every: int = 250) -> dict:
    """Run ``cases`` cases against a live IcapServer; count escaped exceptions and hangs."""
    from agent.intake.icap.server import IcapServer
    from tests.intake.icap.support import LoopThread, MarkerInspector

    errors: list = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage()[:200])

    handler = Catch()
    gc.collect()  # what earlier code left for the collector is logged now, not counted against this service
    for name in ("asyncio", "gatewatch"):
        logging.getLogger(name).addHandler(handler)
    limits = P.IcapLimits(read_timeout=1.0, idle_timeout=1.0, scan_timeout=2.0, stall_timeout=0.05)
    server = IcapServer(MarkerInspector(), limits=limits)
    lt = LoopThread(server)
    lt.loop.call_soon_threadsafe(lt.loop.set_exception_handler,
                                 lambda loop, ctx: errors.append(str(ctx.get("exception") or ctx.get("message"))[:200]))
    rng = random.Random(seed)
    pool = seeds()
    out = {"cases": 0, "exceptions": 0, "hangs": 0, "failures": [], "checks": 0, "answers": collections.Counter(),
           "max_case_seconds": 0.0}
    try:
        for n in range(cases):
            first, rest = case(rng, pool)
            out["cases"] += 1
            before = len(errors)
            t0 = time.perf_counter()
            try:
                out["answers"][live_case(lt.port, first, rest, case_seconds)] += 1
                out["max_case_seconds"] = max(out["max_case_seconds"], time.perf_counter() - t0)
            except Hang:
                out["hangs"] += 1
                out["failures"].append(("hang", n, first[:200]))
            if len(errors) > before:
                if len(out["failures"]) < 10:
                    out["failures"].append((errors[-1], n, first[:200]))
            if check_every and (n + 1) % check_every == 0:
                check_service(lt.port)
                out["checks"] += 1
        check_service(lt.port)  # still answering valid requests correctly afterwards
        out["checks"] += 1
        time.sleep(0.05)  # let the loop log what the last case left
        out["exceptions"] = len(errors)  # anything logged at ERROR or by the loop's exception handler
        out["internal_errors"] = server.stats["internal_errors"]  # handled, but a bug: also logged (counted above)
        out["stats"] = dict(server.stats)
    finally:
        lt.stop()
        for name in ("asyncio", "gatewatch"):
            logging.getLogger(name).removeHandler(handler)
    return out
