"""RFC 3507 parser/serializer fed raw bytes: every request shape, and malformed input."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.intake.icap import protocol as P
from tests.intake.icap.support import JPEG_HEAD, REQ_HDR, respmod


def feed_all(data, conn=None, step=None):
    conn = conn or P.IcapConnection()
    events = []
    if step:
        for i in range(0, len(data), step):
            events += conn.receive(data[i:i + step])
    else:
        events += conn.receive(data)
    return conn, events


def body_of(events):
    return b"".join(e.data for e in events if isinstance(e, P.BodyData))


def test_options_without_encapsulated():
    conn, ev = feed_all(b"OPTIONS icap://127.0.0.1:1344/respmod ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert len(ev) == 1 and ev[0].method == "OPTIONS" and ev[0].service == "/respmod"
    assert not ev[0].has_body and conn.idle


def test_options_response_fields():
    raw = P.options_response("lists-v7", P.IcapLimits(preview=1024, max_connections=9, options_ttl=60))
    text = raw.decode()
    assert text.startswith("ICAP/1.0 200 OK\r\n") and text.endswith("\r\n\r\n")
    for line in ("Methods: RESPMOD", 'ISTag: "lists-v7"', "Allow: 204", "Preview: 1024",
                 "Transfer-Preview: *", "Options-TTL: 60", "Max-Connections: 9", "Encapsulated: null-body=0"):
        assert line in text


def test_istag_is_quoted_and_bounded():
    assert P.quote_istag("a b\"c") == '"abc"'
    long = P.quote_istag("x" * 100)
    assert len(long) == 34 and long != P.quote_istag("y" * 100)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_respmod_without_preview_any_split(step):
    body = JPEG_HEAD + bytes(range(256)) * 50
    first, rest = respmod(body)
    conn, ev = feed_all(first, step=step)
    req = ev[0]
    assert isinstance(req, P.Request) and req.method == "RESPMOD" and req.allow_204 and req.preview is None
    assert req.http_request.start == ("GET", "http://origin.test/pics/a.jpg", "HTTP/1.1")
    assert req.http_response.media_type() == "image/jpeg" and req.http_request_raw == REQ_HDR
    assert body_of(ev) == body and ev[-1] == P.BodyEnd(ieof=False)
    assert conn.idle


def test_preview_then_continue():
    body = JPEG_HEAD + b"x" * 10000
    first, rest = respmod(body, preview=1024)
    conn, ev = feed_all(first)
    assert ev[0].preview == 1024
    assert body_of(ev) == body[:1024] and all(e.in_preview for e in ev if isinstance(e, P.BodyData))
    assert isinstance(ev[-1], P.PreviewEnd) and conn.state == "preview-wait"
    # Bytes sent early stay buffered until the server decides.
    assert conn.receive(rest[:5]) == []
    conn.continue_after_preview()
    ev2 = conn.receive(rest[5:])
    assert body_of(ev2) == body[1024:] and ev2[-1] == P.BodyEnd(ieof=False) and conn.idle


def test_preview_with_ieof_is_whole_body():
    body = JPEG_HEAD + b"small"
    first, rest = respmod(body, preview=4096)
    assert rest == b"" and b"0; ieof\r\n\r\n" in first
    conn, ev = feed_all(first)
    assert body_of(ev) == body and ev[-1] == P.BodyEnd(ieof=True) and conn.idle


def test_preview_answered_without_rest_then_next_request_pipelined():
    first, _ = respmod(b"%PDF-1.4 " + b"p" * 5000, ctype="application/pdf", preview=100)
    second, _ = respmod(JPEG_HEAD + b"q", preview=100)
    conn, ev = feed_all(first + second)
    assert isinstance(ev[-1], P.PreviewEnd)
    ev2 = conn.finish_preview()
    assert isinstance(ev2[0], P.Request) and ev2[-1] == P.BodyEnd(ieof=True)


def test_null_body_and_reqmod():
    req = (b"REQMOD icap://h/reqmod ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n" % len(REQ_HDR)
           + REQ_HDR)
    conn, ev = feed_all(req)
    assert ev[0].method == "REQMOD" and not ev[0].has_body and conn.idle
    assert ev[0].http_request.get("host") == "origin.test"


def test_connection_close_ends_parsing():
    first, _ = respmod(JPEG_HEAD, keep_alive=False)
    conn, ev = feed_all(first + first)
    assert sum(isinstance(e, P.Request) for e in ev) == 1 and conn.state == "closed"


def test_responses_serialize():
    assert P.no_content_response("t") == b'ICAP/1.0 204 No Content\r\nISTag: "t"\r\nEncapsulated: null-body=0\r\n\r\n'
    http = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n"
    raw = P.modified_response("t", http, b"no")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Encapsulated: res-hdr=0, res-body=%d" % len(http) in head
    assert rest == http + b"2\r\nno\r\n0\r\n\r\n"
    assert P.error_response(400).startswith(b"ICAP/1.0 400 Bad Request\r\n")
    assert b"Connection: close" in P.error_response(503)


# ---- malformed input: a ProtocolError with the right status, the connection closes ----

def error_of(data, limits=P.IcapLimits()):
    conn, ev = feed_all(data, P.IcapConnection(limits))
    errors = [e for e in ev if isinstance(e, P.ProtocolError)]
    assert errors, ev
    assert conn.state == "closed" and conn.receive(b"more") == []
    return errors[0]


def test_bad_request_line_version_method():
    assert error_of(b"RESPMOD icap://h/ ICAP/2.0\r\n\r\n").status == 505
    assert error_of(b"FROB icap://h/ ICAP/1.0\r\n\r\n").status == 501
    assert error_of(b"RESPMOD http://h/ ICAP/1.0\r\nEncapsulated: null-body=0\r\n\r\n").status == 400
    assert error_of(b"garbage\r\n\r\n").status == 400


def test_missing_or_bad_encapsulated():
    base = b"RESPMOD icap://h/ ICAP/1.0\r\n"
    assert error_of(base + b"\r\n").status == 400
    for bad in (b"res-body", b"res-hdr=0", b"res-hdr=10, res-body=5", b"res-hdr=3, res-body=9",
                b"req-body=0", b"res-body=x", b"res-hdr=0, res-hdr=0, res-body=0",
                b"res-hdr=0, req-hdr=9, res-body=20"):
        assert error_of(base + b"Encapsulated: " + bad + b"\r\n\r\n").status == 400, bad


def test_lying_encapsulated_offsets():
    rh = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n"
    for off in (len(REQ_HDR) - 3, len(REQ_HDR) + 5):
        msg = (b"RESPMOD icap://h/ ICAP/1.0\r\nEncapsulated: req-hdr=0, res-hdr=%d, res-body=%d\r\n\r\n"
               % (off, len(REQ_HDR) + len(rh)) + REQ_HDR + rh + b"0\r\n\r\n")
        err = error_of(msg)
        assert err.status == 400 and "offsets" in err.message


def test_bad_chunk_sizes():
    first, _ = respmod(b"abc")
    head = first[: first.index(b"3\r\nabc")]
    for bad in (b"zz\r\nabc\r\n0\r\n\r\n", b"-3\r\nabc\r\n", b"3\r\nabcXX0\r\n\r\n",
                b"fffffffffffffffffff\r\n", b"3" * 5000):
        assert error_of(head + bad).status == 400, bad


def test_oversized_heads():
    limits = P.IcapLimits(max_head_bytes=1024, max_http_head_bytes=2048)
    err = error_of(b"RESPMOD icap://h/ ICAP/1.0\r\nX-Pad: " + b"a" * 2000, limits)
    assert "larger" in err.message
    big = b"GET / HTTP/1.1\r\nX: " + b"b" * 3000 + b"\r\n\r\n"
    msg = b"RESPMOD icap://h/ ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n" % len(big)
    assert "larger" in error_of(msg, limits).message


def test_preview_longer_than_announced():
    first, _ = respmod(b"y" * 50, preview=10)
    # Rewrite Preview: 10 -> the client then sends 10 bytes; forge a longer one.
    forged = first.replace(b"a\r\n" + b"y" * 10, b"14\r\n" + b"y" * 20)
    assert "preview" in error_of(forged).message


def test_bad_encapsulated_http_head():
    bad = b"NOT HTTP\r\n\r\n"
    msg = b"REQMOD icap://h/ ICAP/1.0\r\nEncapsulated: req-hdr=0, null-body=%d\r\n\r\n" % len(bad) + bad
    assert error_of(msg).status == 400


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_crash(data, step):
    conn = P.IcapConnection(P.IcapLimits(max_head_bytes=512, max_http_head_bytes=512))
    for i in range(0, len(data), step):
        for ev in conn.receive(data[i:i + step]):
            assert isinstance(ev, (P.Request, P.BodyData, P.PreviewEnd, P.BodyEnd, P.ProtocolError))
    assert len(conn._buf) <= 600


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=4096), st.sampled_from([None, 0, 5, 100]))
def test_any_body_roundtrips(body, step, preview):
    first, rest = respmod(body, preview=preview)
    conn, ev = feed_all(first, step=step)
    if isinstance(ev[-1], P.PreviewEnd):
        conn.continue_after_preview()
        ev += conn.receive(rest)
    assert body_of(ev) == body and isinstance(ev[-1], P.BodyEnd)
