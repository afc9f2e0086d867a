"""The live ICAP service against hostile numbers, hostile Hosts, bodies without an HTTP head and other
ways a listed image could slip through: always an answer, never a silent pass, and it keeps serving."""

import logging
import re

import pytest

from agent.intake.blockpage import BlockPage
from agent.intake.icap.protocol import IcapLimits
from tests.intake.icap.support import JPEG_HEAD, MARKER, chunked, connect, read_icap_response, respmod
from tests.intake.icap.test_server import exchange

LISTED = JPEG_HEAD + b"a" * 2000 + MARKER + b"b" * 2000
CLEAN = JPEG_HEAD + b"c" * 3000
SECRETS = ("SECRET", "192.0.2.7", "UA-SECRET")
BROWSER_REQ = (b"GET /pics/a.jpg HTTP/1.1\r\nHost: %s\r\nAccept: text/html,*/*\r\nCookie: s=SECRET\r\n"
               b"User-Agent: UA-SECRET\r\n\r\n")


def still_serves(lt):
    s, status, _, heads, _ = exchange(lt.port, *respmod(LISTED, preview=1024))
    assert status == 200 and heads.startswith(b"HTTP/1.1 403")
    s.close()


def raw_exchange(port, data, timeout=5):
    s = connect(port, timeout=timeout)
    s.sendall(data)
    return s, read_icap_response(s)


@pytest.mark.parametrize("where", ["encapsulated", "preview", "content-length", "chunk"])
def test_non_ascii_digits_get_a_400_and_the_service_lives(icap, where):
    lt = icap()
    first, _ = respmod(LISTED, preview=10)
    if where == "encapsulated":
        bad = b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nEncapsulated: res-body=\xc2\xb2\r\n\r\n"
    elif where == "preview":
        bad = first.replace(b"Preview: 10", b"Preview: \xc2\xb2")
    elif where == "content-length":
        bad = first.replace(b"Content-Length: %d" % len(LISTED), b"Content-Length: 1\xc2\xb2")
        m = re.search(rb"res-body=(\d+)", bad)  # keep the offsets true: the head grew
        bad = bad.replace(m.group(0), b"res-body=%d" % (int(m.group(1)) + len(bad) - len(first)))
    else:
        bad = first[:first.index(b"\r\n\r\nGET") + 4] + first[first.index(b"\r\n\r\nGET") + 4:].replace(
            b"a\r\n", b"\xd9\xa1\r\n", 1)
    s, (status, fields, _, _) = raw_exchange(lt.port, bad)
    assert status == 400 and fields.get("x-gatewatch-error") and fields.get("connection") == "close"
    assert lt.server.stats["protocol_errors"] == 1
    still_serves(lt)


def test_listed_image_behind_a_broken_host_is_still_blocked(icap, caplog):
    lt = icap()
    caplog.set_level(logging.DEBUG)
    for host in (b"[::1", b"[::1]:99999", b"[v1.x", b"\xe2\x84\x80b", b"a b", b"x@[", b"%", b""):
        req = BROWSER_REQ % host
        s, status, _, heads, page = exchange(lt.port, *respmod(LISTED, preview=1024, req_hdr=req))
        assert status == 200 and heads.startswith(b"HTTP/1.1 403"), host
        assert b"This content was blocked" in page
        s.close()
    assert lt.server.stats["blocked"] == 8 and lt.server.stats["internal_errors"] == 0
    assert not any(x in caplog.text for x in SECRETS)


def test_block_page_that_raises_still_blocks(icap):
    class Broken(BlockPage):
        def response(self, *a, **kw):
            raise RuntimeError("template exploded")

    lt = icap(block_page=Broken())
    s, status, _, heads, page = exchange(lt.port, *respmod(LISTED, preview=1024))
    assert status == 200 and heads.startswith(b"HTTP/1.1 403") and b"blocked" in page


def noreshdr(body, req_hdr=None, allow204=True, preview=None):
    """A RESPMOD without res-hdr, as c-icap-client -noreshdr sends it."""
    enc = b"res-body=0" if req_hdr is None else b"req-hdr=0, res-body=%d" % len(req_hdr)
    head = [b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0", b"Host: 127.0.0.1", b"Encapsulated: " + enc]
    if allow204:
        head.append(b"Allow: 204")
    if preview is not None:
        head.append(b"Preview: %d" % preview)
    msg = b"\r\n".join(head) + b"\r\n\r\n" + (req_hdr or b"")
    if preview is None:
        return msg + chunked(body) + b"0\r\n\r\n", b""
    if len(body) <= preview:
        return msg + chunked(body) + b"0; ieof\r\n\r\n", b""
    return msg + chunked(body[:preview]) + b"0\r\n\r\n", chunked(body[preview:]) + b"0\r\n\r\n"


REQ = b"GET http://origin.test/pics/a.jpg HTTP/1.1\r\nHost: origin.test\r\nCookie: s=SECRET\r\n\r\n"


@pytest.mark.parametrize("req_hdr", [None, REQ])
@pytest.mark.parametrize("preview", [None, 0, 8, 1024])
def test_listed_image_without_response_head_is_sniffed_and_blocked(icap, req_hdr, preview):
    lt = icap()
    s, status, fields, heads, page = exchange(lt.port, *noreshdr(LISTED, req_hdr, preview=preview))
    assert status == 200 and heads.startswith(b"HTTP/1.1 403"), (status, heads)
    assert fields["encapsulated"].startswith("res-hdr=0, res-body=")
    assert lt.server.stats["blocked"] == 1 and lt.inspector.seen[0][0] == len(LISTED)
    # Clean image: scanned, then 204; the connection stays usable.
    s, status, _, _, _ = exchange(lt.port, *noreshdr(CLEAN, req_hdr, preview=preview), sock=s)
    assert status == 204 and lt.server.stats["scanned"] == 2


def test_body_without_response_head_and_no_204_is_echoed_whole(icap):
    lt = icap()
    text = b"just text, not an image " * 500
    s, status, fields, heads, body = exchange(lt.port, *noreshdr(text, allow204=False))
    assert status == 200 and fields["encapsulated"] == "res-body=0" and heads == b"" and body == text
    s, status, fields, heads, body = exchange(lt.port, *noreshdr(CLEAN, REQ, allow204=False), sock=s)
    assert status == 200 and body == CLEAN and lt.server.stats["scanned"] == 1
    assert lt.server.stats["passed_unscanned"] == 1


@pytest.mark.parametrize("ctype", ["text/html", "text/plain", "application/json"])
def test_tiny_preview_of_a_lying_type_is_sniffed(icap, ctype):
    # Preview: 0 (or a few bytes) of a body typed text/*: only the bytes can say it is an image.
    lt = icap()
    for preview in (0, 4):
        s, status, _, heads, _ = exchange(lt.port, *respmod(LISTED, ctype=ctype, preview=preview))
        assert status == 200 and heads.startswith(b"HTTP/1.1 403"), (ctype, preview)
    s, status, _, _, _ = exchange(lt.port, *respmod(b"<html>" + b"t" * 3000, ctype=ctype, preview=0))
    assert status == 204 and lt.server.stats["passed_unscanned"] == 1


def test_image_upload_in_reqmod_is_counted_and_logged_by_host(icap, caplog):
    lt = icap()
    caplog.set_level(logging.INFO, logger="gatewatch.icap")
    req = (b"POST /upload HTTP/1.1\r\nHost: uploads.test\r\nCookie: s=SECRET\r\nUser-Agent: UA-SECRET\r\n"
           b"Content-Type: application/octet-stream\r\n\r\n")
    head = (b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0\r\nX-Client-IP: 192.0.2.7\r\nAllow: 204\r\n"
            b"Encapsulated: req-hdr=0, req-body=%d\r\n\r\n" % len(req))
    s, status, _, _, _ = exchange(lt.port, head + req + chunked(LISTED) + b"0\r\n\r\n")
    assert status == 204 and lt.server.stats["unscanned_images"] == 1
    assert "uploads.test" in caplog.text and not any(x in caplog.text for x in SECRETS)
    s, status, _, _, _ = exchange(lt.port, head + req + chunked(b"name=value&x=y" * 10) + b"0\r\n\r\n", sock=s)
    assert status == 204 and lt.server.stats["unscanned_images"] == 1


def test_protocol_error_mid_image_is_counted_as_a_bypass(icap, caplog):
    lt = icap()
    caplog.set_level(logging.INFO, logger="gatewatch.icap")
    req = b"GET /a.jpg HTTP/1.1\r\nHost: origin.test\r\nCookie: s=SECRET\r\n\r\n"
    first, rest = respmod(LISTED, preview=1024, req_hdr=req)
    s = connect(lt.port)
    s.sendall(first)
    assert read_icap_response(s)[0] == 100
    s.sendall(b"zz\r\ngarbage")
    status, fields, _, _ = read_icap_response(s)
    assert status == 400 and lt.server.stats["bypassed"] == 1 and lt.server.stats["protocol_errors"] == 1
    assert "origin.test" in caplog.text and "SECRET" not in caplog.text
    still_serves(lt)


def test_unknown_service_for_an_image_is_counted(icap, caplog):
    lt = icap()
    caplog.set_level(logging.INFO, logger="gatewatch.icap")
    s, status, fields, _, _ = exchange(lt.port, *respmod(LISTED, preview=1024, service="/nope"))
    assert status == 404 and lt.server.stats["bypassed"] == 1 and "origin.test" in caplog.text
    still_serves(lt)


def test_internal_error_is_an_answer_not_a_traceback(icap, monkeypatch, caplog):
    from agent.intake.icap import server as S

    lt = icap()

    def boom(self, req):
        raise KeyError("bug")

    monkeypatch.setattr(S._Session, "respmod", boom)
    s, status, fields, _, _ = exchange(lt.port, *respmod(LISTED, preview=1024))
    assert status == 500 and lt.server.stats["internal_errors"] == 1 and lt.server.stats["bypassed"] == 1
    monkeypatch.undo()
    still_serves(lt)


def test_a_stalled_hostile_client_does_not_hold_up_others(icap):
    lt = icap(limits=IcapLimits(read_timeout=5.0))
    stalled = []
    for part in (b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0\r\nEncapsulated: res-bo",
                 respmod(LISTED, preview=1024)[0][:300]):
        s = connect(lt.port)
        s.sendall(part)
        stalled.append(s)
    still_serves(lt)
    s, status, _, _, _ = exchange(lt.port, *respmod(CLEAN, preview=1024))
    assert status == 204
    for s in stalled:
        s.close()
