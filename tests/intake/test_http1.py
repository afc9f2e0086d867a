"""agent.intake.http1 fed bytes: strict numbers, framing rules against smuggling, hosts, the chunk decoder."""

import pytest

from agent.intake.http1 import ChunkedDecoder, HttpError, body_framing, parse_authority, parse_head


def req(*fields, start=b"GET / HTTP/1.1"):
    return parse_head(start + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n", "request")


def res(*fields, start=b"HTTP/1.1 200 OK"):
    return parse_head(start + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n", "response")


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff11", "-1", "+5", "1e3", "0x10", " ", "",
                                   "1" * 16, "99999999999999999999", "1 2", "5,6"])
def test_bad_content_length_is_an_http_error(value):
    # '²'.isdigit() is True and int('²') raises ValueError: that used to escape as a traceback.
    head = req(b"Content-Length: " + value.encode("latin-1", "replace") if value.isascii()
               else b"Content-Length: " + value.encode("utf-8"))
    for request in (True, False):
        with pytest.raises(HttpError):
            body_framing(head, request=request)


def test_good_content_lengths():
    assert body_framing(req(b"Content-Length: 0012"), request=True) == ("length", 12)
    assert body_framing(req(b"Content-Length: 5, 5")) == ("length", 5)
    assert body_framing(req(b"Content-Length: 999999999999999")) == ("length", 999999999999999)
    assert body_framing(req(), request=True) == ("length", 0)
    assert body_framing(res()) == ("close", 0)


@pytest.mark.parametrize("fields,status", [
    ((b"Transfer-Encoding: chunked, identity", b"Content-Length: 5"), 400),  # RFC 9112 6.3
    ((b"Transfer-Encoding: chunked", b"Content-Length: 5"), 400),
    ((b"Transfer-Encoding: chunked, identity",), 400),  # not chunked last: would read as no body
    ((b"Transfer-Encoding: gzip",), 400),
    ((b"Transfer-Encoding: gzip, chunked",), 501),
    ((b"Transfer-Encoding:",), 400),
])
def test_request_framing_that_could_smuggle_is_refused(fields, status):
    with pytest.raises(HttpError) as info:
        body_framing(req(*fields), request=True)
    assert info.value.status == status


def test_response_framing_rules():
    assert body_framing(res(b"Transfer-Encoding: chunked", b"Content-Length: 5")) == ("chunked", 0)
    assert body_framing(res(b"Transfer-Encoding: chunked, identity")) == ("close", 0)
    with pytest.raises(HttpError):
        body_framing(res(b"Content-Length: 5", b"Content-Length: 6"))


@pytest.mark.parametrize("text,expect", [
    ("example.com", ("example.com", 80)),
    ("Example.COM.:8080", ("example.com", 8080)),
    ("127.1", ("127.0.0.1", 80)),
    ("2130706433:3128", ("127.0.0.1", 3128)),
    ("0x7f.0.0.1", ("127.0.0.1", 80)),
    ("[::1]:81", ("::1", 81)),
    ("[::ffff:127.0.0.1]", ("::ffff:7f00:1", 80)),
    ("a_b.example", ("a_b.example", 80)),
    ("host:", ("host", 80)),
])
def test_authority_normalised(text, expect):
    assert parse_authority(text) == expect


@pytest.mark.parametrize("text", ["a:xyz", "a:99999", "a:0", "a:-1", "a:\u00b2", "[::1", "[::1]x", "[zz::1]:80",
                                  "[fe80::1%25eth0]", "a" * 70 + ".com", "a" * 254, "", "a..b", "-a.com",
                                  "a b", "user@host", "h\u00e9.com", "1.2.3.4.5", "1.2.3.999", "08.1.1.1",
                                  "a.123", "::1", "host:1:2", "a:80 ", "a:" + "9" * 40])
def test_bad_authority_is_an_http_error(text):
    with pytest.raises(HttpError):
        parse_authority(text)


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1x", b"GET /a\x7fb HTTP/1.1", b"GET / HTTP/2.0",
                                  b"G@T / HTTP/1.1", b"GET  / HTTP/1.1", b"GET /\xff HTTP/1.1"])
def test_bad_request_lines(line):
    with pytest.raises(HttpError):
        parse_head(line + b"\r\nHost: x\r\n\r\n", "request")


@pytest.mark.parametrize("field", [b"X: a\rb", b"X: a\nb", b"X: a\x00b", b"X\x00: a", b" X: folded"])
def test_control_characters_in_fields_are_refused(field):
    # A bare CR or LF forwarded to an origin could split a header in two there.
    with pytest.raises(HttpError):
        parse_head(b"GET / HTTP/1.1\r\n" + field + b"\r\n\r\n", "request")


@pytest.mark.parametrize("line", [b"HTTP/1.1 2000 OK", b"HTTP/1.1 \xb2\xb2\xb2 OK", b"HTTP/1.1 099 X",
                                  b"HTTPS/1.1 200 OK", b"HTTP/1.1 200 O\x00K"])
def test_bad_status_lines(line):
    with pytest.raises(HttpError):
        parse_head(line + b"\r\n\r\n", "response")


def test_chunked_decoder_keeps_the_pipelined_request():
    body = b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"
    nxt = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    for split in range(1, len(body + nxt)):
        data = body + nxt
        dec = ChunkedDecoder()
        out = dec.feed(data[:split]) + dec.feed(data[split:])
        assert b"".join(out) == b"hello" and dec.done and dec.trailing == nxt, split


@pytest.mark.parametrize("stream", [b"g\r\n", b"-1\r\n", b"1" * 16 + b"\r\n", b"5\r\nhelloXX", b"\xb2\r\n",
                                    b"a" * 5000])
def test_chunked_decoder_refuses_bad_streams(stream):
    with pytest.raises(HttpError):
        ChunkedDecoder().feed(stream)


def test_numeric_hosts_read_as_the_kernel_reads_them():
    # the loop guard and the upstream rules must see the address the kernel would connect to
    import random
    import socket
    from agent.intake.http1 import HttpError, _normal_name
    rnd = random.Random(5)
    for _ in range(3000):
        parts = rnd.randint(1, 4)
        labels = []
        for _ in range(parts):
            n = rnd.choice([rnd.randint(0, 255), rnd.randint(0, 1 << 24), rnd.randint(0, 1 << 32)])
            labels.append(rnd.choice(["%d" % n, "0x%x" % n, "0%o" % n]))
        host = ".".join(labels)
        try:
            want = socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            want = None
        try:
            got = _normal_name(host)
        except HttpError:
            got = None
        assert got == want, host
