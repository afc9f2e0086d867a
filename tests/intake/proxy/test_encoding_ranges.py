"""Evasions through Content-Encoding and byte ranges: the listed image must be hashed whole and decoded."""

import gzip
import logging
import zlib

import pytest

from agent.intake.coding import BoundedDecoder, DecodeError, offered_encodings
from agent.intake.proxy.server import ProxyLimits
from tests.intake.icap.support import JPEG_HEAD, MARKER
from tests.intake.proxy.origins import ScriptedOrigin, ranged, raw_request, split_response

LISTED = JPEG_HEAD + b"x" * 1000 + MARKER + b"y" * 1000
CLEAN = JPEG_HEAD + bytes(range(256)) * 20


def fixed(status, fields, body):
    return lambda headers, _: (status, fields, body)


@pytest.fixture(scope="module")
def origin_server():
    o = ScriptedOrigin()
    yield o
    o.stop()


@pytest.fixture
def origin(origin_server):
    """One origin per module (stopping one costs 0.5 s); routes and records reset per test."""
    origin_server.routes.clear()
    origin_server.routes.update({})
    origin_server.seen.clear()
    return origin_server


def get(port, url, *fields):
    head = b"GET %s HTTP/1.1\r\nHost: x\r\n" % url.encode() + b"".join(f + b"\r\n" for f in fields)
    return split_response(raw_request(port, head + b"Connection: close\r\n\r\n"))


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("x-gzip", gzip.compress),
                                           ("deflate", zlib.compress),
                                           ("deflate", lambda b: zlib.compress(b)[2:-4])])  # raw deflate
@pytest.mark.parametrize("ctype", ["image/jpeg", "application/octet-stream"])
def test_encoded_listed_image_is_decoded_and_blocked(proxy, origin, coding, encode, ctype):
    origin.routes["/l"] = fixed(200, [("Content-Type", ctype), ("Content-Encoding", coding)], encode(LISTED))
    origin.routes["/c"] = fixed(200, [("Content-Type", ctype), ("Content-Encoding", coding)], encode(CLEAN))
    lt = proxy()
    status, head, body = get(lt.port, origin.url("/l"), b"Accept: image/*")
    assert status == 403 and MARKER not in body
    status, head, body = get(lt.port, origin.url("/c"))
    # the client gets the origin's bytes as they were sent, still encoded
    assert status == 200 and body == encode(CLEAN) and b"Content-Encoding: " + coding.encode() in head
    assert lt.server.stats["decoded"] == 2 and lt.inspector.seen[1][0] == len(CLEAN)
    assert lt.server.held == 0


def test_gzip_bomb_stops_at_max_scan_bytes(proxy, origin):
    bomb = gzip.compress(JPEG_HEAD + b"\0" * (40 << 20))  # 40 MB decoded, ~40 KB sent
    origin.routes["/b"] = fixed(200, [("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip")], bomb)
    lt = proxy(limits=ProxyLimits(max_scan_bytes=1 << 20))
    status, head, body = get(lt.port, origin.url("/b"))
    assert status == 200 and body == bomb  # over the limit: a counted bypass, relayed as sent
    assert lt.server.stats["too_large"] == 1 and lt.server.stats["bypassed"] == 1
    assert lt.server.held_peak <= (1 << 20) + 3 * 65536 + len(bomb) and lt.server.held == 0
    assert lt.inspector.seen == []


def test_undecodable_image_is_counted_and_logged_never_silent(proxy, origin, caplog):
    origin.routes["/br"] = fixed(200, [("Content-Type", "image/jpeg"), ("Content-Encoding", "br")], b"\x1b\x00junk")
    origin.routes["/bad"] = fixed(200, [("Content-Type", "image/png"), ("Content-Encoding", "gzip")], b"not gzip")
    lt = proxy()
    with caplog.at_level(logging.INFO, "gatewatch.proxy"):
        assert get(lt.port, origin.url("/br"))[0] == 200
        assert get(lt.port, origin.url("/bad"))[0] == 200
    assert lt.server.stats["undecodable"] == 2 and lt.server.stats["bypassed"] == 2
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert text.count("image from 127.0.0.1") == 2 and "/br" not in text
    strict = proxy(undecodable_images="block")
    assert get(strict.port, origin.url("/br"))[0] == 502
    assert get(strict.port, origin.url("/bad"))[0] == 502


def test_accept_encoding_offers_only_what_we_decode(proxy, origin):
    origin.routes["/t"] = fixed(200, [("Content-Type", "text/plain")], b"hi")
    lt = proxy()
    get(lt.port, origin.url("/t"), b"Accept-Encoding: gzip, deflate, br, zstd")
    get(lt.port, origin.url("/t"), b"Accept-Encoding: br")
    assert [h.get("accept-encoding") for _, _, h, _ in origin.seen] == ["gzip, deflate", "identity"]
    assert offered_encodings(None) is None and offered_encodings("*") == "identity"


def test_two_ranges_of_a_listed_image_are_both_blocked(proxy, origin):
    origin.routes["/l.jpg"] = ranged(LISTED)
    origin.routes["/c.jpg"] = ranged(CLEAN)
    lt = proxy()
    # The marker straddles byte 1010; the old proxy passed both halves unscanned-whole.
    for rng in (b"bytes=0-999", b"bytes=1000-", b"bytes=0-10,1000-1100"):
        status, head, body = get(lt.port, origin.url("/l.jpg"), b"Range: " + rng, b"If-Range: \"v1\"")
        assert status == 403, rng
    status, head, body = get(lt.port, origin.url("/c.jpg"), b"Range: bytes=0-99")
    assert status == 200 and body == CLEAN  # a 200 with the whole body is a legal answer to a Range
    assert all("range" not in h and "if-range" not in h for _, _, h, _ in origin.seen)
    assert lt.server.stats["ranges_stripped"] == 4


def test_unsolicited_partial_response_is_refused(proxy, origin):
    origin.routes["/p"] = fixed(206, [("Content-Type", "image/jpeg"), ("Content-Range", "bytes 0-999/2040")],
                                LISTED[:1000])
    origin.routes["/m"] = fixed(206, [("Content-Type", "multipart/byteranges; boundary=S")], b"--S--\r\n")
    origin.routes["/w"] = fixed(206, [("Content-Type", "image/jpeg"),
                                      ("Content-Range", "bytes 0-%d/%d" % (len(LISTED) - 1, len(LISTED)))], LISTED)
    lt = proxy()
    assert get(lt.port, origin.url("/p"))[0] == 502
    assert get(lt.port, origin.url("/m"))[0] == 502
    assert get(lt.port, origin.url("/w"))[0] == 403  # a 206 carrying the whole body is scanned as one
    assert lt.server.stats["partial_refused"] == 2


def test_bounded_decoder_units():
    data = bytes(range(256)) * 4000
    for coding, blob in (("gzip", gzip.compress(data[:500]) + gzip.compress(data[500:])),
                         ("deflate", zlib.compress(data))):
        dec, out = BoundedDecoder(coding, len(data)), b""
        for i in range(0, len(blob), 777):
            dec.push(blob[i:i + 777])
            while True:
                piece = dec.pull(1000)
                assert len(piece) <= 1000
                if not piece:
                    break
                out += piece
        assert out == data and dec.complete and not dec.over
    dec = BoundedDecoder("gzip", 100)
    dec.push(gzip.compress(b"\0" * 10 ** 6))
    got = b"".join(iter(lambda: dec.pull(64), b""))
    assert len(got) == 100 and dec.over
    with pytest.raises(DecodeError):
        dec = BoundedDecoder("gzip", 100)
        dec.push(b"\x1f\x8bgarbage")
        dec.pull(10)
