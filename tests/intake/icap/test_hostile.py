"""Hostile numbers and duplicates fed to the ICAP parser: every one is a clean ProtocolError 400, never
an exception, and the connection is closed (nothing more is parsed)."""

import pytest

from agent.intake.icap import protocol as P
from tests.intake.icap.support import REQ_HDR, respmod

RH = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n"


def feed(data, limits=P.IcapLimits(), step=None):
    conn = P.IcapConnection(limits)
    events = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        events += conn.receive(data[i:i + step])  # must never raise
    return conn, events


def refused(data, limits=P.IcapLimits(), status=400):
    for step in (None, 1, 13):
        conn, ev = feed(data, limits, step)
        errors = [e for e in ev if isinstance(e, P.ProtocolError)]
        assert errors, (data, ev)
        assert errors[0].status == status and conn.state == "closed" and conn.receive(b"x") == []
        assert all(32 <= ord(c) < 127 for c in errors[0].message)  # printable ASCII: logs and headers
    return errors[0]


def icap(encapsulated, extra=b"", tail=b""):
    return (b"RESPMOD icap://h/respmod ICAP/1.0\r\nHost: h\r\nEncapsulated: " + encapsulated
            + b"\r\n" + extra + b"\r\n" + tail)


NON_ASCII_DIGITS = ["\u00b2", "\u0661", "\u0967", "\uff11", "\U0001d7d9", "1\u00b2", "\u00b9\u2070"]


@pytest.mark.parametrize("digit", NON_ASCII_DIGITS)
def test_non_ascii_digit_in_encapsulated_offset(digit):
    # str.isdigit() says yes, int() then raised ValueError out of receive(): a traceback, no answer.
    value = ("res-body=%s" % digit).encode("utf-8")
    err = refused(icap(value))
    assert "Encapsulated" in err.message
    value = ("req-hdr=0, res-hdr=%s, res-body=90" % digit).encode("utf-8")
    refused(icap(value))


@pytest.mark.parametrize("digit", NON_ASCII_DIGITS)
def test_non_ascii_digit_in_preview(digit):
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    bad = first.replace(b"Preview: 10", b"Preview: " + digit.encode("utf-8"))
    assert bad != first
    assert "Preview" in refused(bad).message


@pytest.mark.parametrize("value", [b"-1", b"+5", b"1_0", b"0x10", b"1e3", b" ", b"", b"10, 20", b"99999999999999999999",
                                   b"\xb2", b"1.5"])
def test_bad_preview_values(value):
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    refused(first.replace(b"Preview: 10", b"Preview: " + value))


def test_huge_preview_is_refused_not_buffered():
    # A 1 GB preview would have made the server buffer the whole "preview" in memory.
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    assert "Preview" in refused(first.replace(b"Preview: 10", b"Preview: 999999999")).message
    ok, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=65536)
    assert isinstance(feed(ok)[1][0], P.Request)


@pytest.mark.parametrize("enc", [b"res-body=-1", b"res-body=+0", b"res-body=0x0", b"res-body=1_0", b"res-body= ",
                                 b"res-body=99999999999999999999999", b"req-hdr=0, res-hdr=5, res-body=3",
                                 b"res-hdr=0, req-hdr=10, res-body=20", b"req-hdr=0, req-hdr=10, res-body=20",
                                 b"res-body=0, res-body=0", b"res-hdr=0, null-body=5, res-body=9", b"res-body=1",
                                 b"foo=0, res-body=10", b"res-hdr=0;res-body=5", b"res-hdr=0,, res-body=5",
                                 b"req-hdr=0, res-hdr=0, res-body=0", b"RES-BODY=\xc2\xb2"])
def test_bad_encapsulated(enc):
    refused(icap(enc))


def test_duplicate_encapsulated_and_preview_headers():
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    head, sep, rest = first.partition(b"\r\n\r\n")
    enc = [l for l in head.split(b"\r\n") if l.startswith(b"Encapsulated")][0]
    assert "duplicate" in refused(head + b"\r\n" + enc + sep + rest).message
    assert "duplicate" in refused(head + b"\r\nPREVIEW: 10" + sep + rest).message


@pytest.mark.parametrize("length", [b"\xb2", b"-1", b"1 2", b"+3", b"0x10", b"", b"1" * 40])
def test_bad_content_length_in_encapsulated_head(length):
    rh = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: " + length + b"\r\n\r\n"
    msg = icap(b"req-hdr=0, res-hdr=%d, res-body=%d" % (len(REQ_HDR), len(REQ_HDR) + len(rh)),
               tail=REQ_HDR + rh + b"3\r\nabc\r\n0\r\n\r\n")
    assert "Content-Length" in refused(msg).message


def test_conflicting_content_lengths_in_encapsulated_head():
    rh = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
    msg = icap(b"res-hdr=0, res-body=%d" % len(rh), tail=rh + b"3\r\nabc\r\n0\r\n\r\n")
    assert "Content-Length" in refused(msg).message
    same = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
    ok = icap(b"res-hdr=0, res-body=%d" % len(same), tail=same + b"3\r\nabc\r\n0\r\n\r\n")
    assert feed(ok)[1][-1] == P.BodyEnd(ieof=False)


@pytest.mark.parametrize("chunk", [b"\xd9\xa3\r\nabc\r\n", b"-3\r\nabc\r\n", b"+3\r\nabc\r\n", b"0x3\r\nabc\r\n",
                                   b"3 3\r\nabc\r\n", b"ffffffffffffff\r\n", b"1000000000000\r\n", b"\r\n",
                                   b";ieof\r\n\r\n", b"3\nabc\n", b"3\r\nabcd\r\n", b"3;" + b"e" * 5000,
                                   b"0\r\nbad trailer\r\n\r\n",
                                   pytest.param(b"0\r\n" + b"X: y\r\n" * 1000 + b"\r\n", id="long-trailer")])
def test_chunk_size_garbage(chunk):
    head = icap(b"res-hdr=0, res-body=%d" % len(RH), tail=RH)
    refused(head + chunk)


def test_chunk_sizes_and_trailers_that_are_fine():
    head = icap(b"res-hdr=0, res-body=%d" % len(RH), tail=RH)
    for body in (b"3\r\nabc\r\n0\r\n\r\n", b"03 ; name=value\r\nabc\r\n0;x\r\n\r\n", b"3\r\nabc\r\n0\r\nX: y\r\n\r\n",
                 b"A\r\n0123456789\r\n0\r\n\r\n"):
        conn, ev = feed(head + body)
        assert isinstance(ev[-1], P.BodyEnd) and conn.idle, body


def test_ieof_counts_only_on_the_last_chunk():
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    # "ieof" on a data chunk does not end the body inside the preview.
    forged = first.replace(b"a\r\n", b"a; ieof\r\n")
    conn, ev = feed(forged)
    assert isinstance(ev[-1], P.PreviewEnd) and conn.state == "preview-wait"


def test_flood_while_a_preview_waits_is_bounded():
    limits = P.IcapLimits(max_head_bytes=1024, max_http_head_bytes=1024)
    first, _ = respmod(b"\xff\xd8\xff" + b"x" * 50, preview=10)
    conn, ev = feed(first, limits)
    assert conn.state == "preview-wait"
    assert conn.receive(b"z" * 1000) == []
    ev = conn.receive(b"z" * 2000)
    assert isinstance(ev[-1], P.ProtocolError) and conn.state == "closed" and not conn._buf


def test_endless_empty_lines_are_cut_off():
    conn, ev = feed(b"\r\n" * 100)
    assert isinstance(ev[-1], P.ProtocolError)


def test_protocol_errors_never_quote_client_data():
    # The encapsulated request line and the ICAP head's client fields must not reach logs.
    bad_req = b"GET /secret-path?token=SECRET HTTP/9\r\nCookie: SECRET\r\n\r\n"
    err = refused(icap(b"req-hdr=0, null-body=%d" % len(bad_req), tail=bad_req).replace(b"RESPMOD", b"REQMOD", 1)
                  .replace(b"/respmod", b"/reqmod"))
    assert "SECRET" not in err.message
    bad_field = b"RESPMOD icap://h/ ICAP/1.0\r\nX-Client-IP 192.0.2.7 SECRET\r\nEncapsulated: null-body=0\r\n\r\n"
    err = refused(bad_field)
    assert "SECRET" not in err.message and "192.0.2.7" not in err.message
    bad_hdr = b"HTTP/1.1 200 OK\r\nSet-Cookie SECRET\r\n\r\n"
    err = refused(icap(b"res-hdr=0, res-body=%d" % len(bad_hdr), tail=bad_hdr))
    assert "SECRET" not in err.message


def test_error_response_carries_a_clear_ascii_reason():
    raw = P.error_response(400, "t", "bad Preview value \u00b2\r\nInjected: yes")
    head = raw.decode("ascii")
    assert head.startswith("ICAP/1.0 400 Bad Request\r\n") and "X-Gatewatch-Error: bad Preview value ?" in head
    assert "\r\nInjected" not in head and head.endswith("\r\n\r\n")


def test_ascii_int():
    assert P.ascii_int(" 42 ", "x", 100) == 42 and P.ascii_int("007", "x", 10) == 7
    for bad in ("\u00b2", "-1", "+1", "1_0", "", "101", "1" * 30, "١"):
        with pytest.raises(P.IcapError):
            P.ascii_int(bad, "x", 100)
