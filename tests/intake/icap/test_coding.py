"""Encoded responses: a listed image served gzip/deflate-encoded is decoded (boundedly) and blocked;
one the service cannot decode is counted and logged, never passed silently."""

import gzip
import logging
import random
import zlib

import pytest

from agent.intake import coding as C
from agent.intake.icap.protocol import IcapLimits
from tests.intake.icap.support import JPEG_HEAD, MARKER, chunked
from tests.intake.icap.test_server import exchange

LISTED = JPEG_HEAD + b"a" * 3000 + MARKER + b"b" * 3000
CLEAN = JPEG_HEAD + bytes(range(256)) * 20


def raw_deflate(data):
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush()


@pytest.mark.parametrize("coding, enc", [("gzip", gzip.compress), ("x-gzip", gzip.compress),
                                         ("deflate", zlib.compress), ("deflate", raw_deflate)])
def test_decode_roundtrip_and_partial(coding, enc):
    data = enc(CLEAN)
    assert C.decode(data, [coding], 10 ** 6) == CLEAN
    assert C.decode(data[:200], [coding], 16, partial=True) == CLEAN[:16]
    assert C.decode(C.encode(CLEAN, [coding]), [coding], 10 ** 6) == CLEAN


def test_decode_bounds_and_errors():
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    with pytest.raises(C.TooLarge):
        C.decode(bomb, ["gzip"], 1024 * 1024)
    assert len(C.decode(bomb, ["gzip"], 16, partial=True)) == 16
    assert C.decode(gzip.compress(b"ab") + gzip.compress(b"cd"), ["gzip"], 100) == b"abcd"  # two members
    for bad in (b"not gzip at all", gzip.compress(CLEAN)[:-30]):
        with pytest.raises(C.DecodeError):
            C.decode(bad, ["gzip"], 10 ** 6)
    with pytest.raises(C.DecodeError):
        C.decode(b"x", ["br"], 10)
    assert C.content_codings(" GZip , identity") == ["gzip"] and C.decodable(["gzip"])
    assert not C.decodable(["gzip", "gzip"]) and not C.decodable(["br"]) and C.decodable([])


def encoded_respmod(payload, coding, ctype="image/jpeg", preview=None, allow204=True):
    req = b"GET http://origin.test/a.jpg HTTP/1.1\r\nHost: origin.test\r\nAccept: image/*\r\n\r\n"
    rh = (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
          % (ctype.encode(), coding.encode(), len(payload)))
    head = [b"RESPMOD icap://127.0.0.1/respmod ICAP/1.0",
            b"Encapsulated: req-hdr=0, res-hdr=%d, res-body=%d" % (len(req), len(req) + len(rh))]
    if allow204:
        head.append(b"Allow: 204")
    if preview is not None:
        head.append(b"Preview: %d" % preview)
    msg = b"\r\n".join(head) + b"\r\n\r\n" + req + rh
    if preview is None:
        return msg + chunked(payload) + b"0\r\n\r\n", b""
    if len(payload) <= preview:
        return msg + chunked(payload) + b"0; ieof\r\n\r\n", b""
    return msg + chunked(payload[:preview]) + b"0\r\n\r\n", chunked(payload[preview:]) + b"0\r\n\r\n"


@pytest.mark.parametrize("ctype", ["image/jpeg", "application/octet-stream", "text/plain"])
@pytest.mark.parametrize("preview", [None, 0, 10, 4096])
def test_gzip_encoded_listed_image_is_blocked(icap, ctype, preview):
    lt = icap()
    s, status, _, heads, _ = exchange(lt.port, *encoded_respmod(gzip.compress(LISTED), "gzip", ctype, preview))
    assert status == 200 and heads.startswith(b"HTTP/1.1 403"), (ctype, preview, status)
    assert lt.inspector.seen[0][0] == len(LISTED)  # the scanner saw the image, not the gzip stream
    s, status, _, _, _ = exchange(lt.port, *encoded_respmod(zlib.compress(CLEAN), "deflate", ctype, preview), sock=s)
    assert status == 204 and lt.inspector.seen[1][0] == len(CLEAN)


def test_undecodable_coding_of_an_image_is_counted_and_logged(icap, caplog):
    lt = icap()
    caplog.set_level(logging.INFO, logger="gatewatch.icap")
    s, status, _, _, _ = exchange(lt.port, *encoded_respmod(b"\x1b\x2a" + b"q" * 500, "br", "image/jpeg", 4096))
    assert status == 204 and lt.server.stats["bypassed"] == 1 and lt.server.stats["encoded_unscanned"] == 1
    assert "origin.test" in caplog.text and "br" in caplog.text
    s, status, _, _, _ = exchange(lt.port, *encoded_respmod(b"\x1b\x2a" + b"q" * 500, "br", "text/html", 4096), sock=s)
    assert status == 204 and lt.server.stats["bypassed"] == 1 and lt.server.stats["encoded_unscanned"] == 2


def test_corrupt_or_bomb_encoded_image_is_a_counted_bypass(icap, caplog):
    lt = icap(limits=IcapLimits(max_scan_bytes=1024 * 1024))
    caplog.set_level(logging.INFO, logger="gatewatch.icap")
    bomb = gzip.compress(JPEG_HEAD + b"\0" * (8 * 1024 * 1024))
    s, status, _, _, _ = exchange(lt.port, *encoded_respmod(bomb, "gzip", "image/jpeg", 4096))
    assert status == 204 and lt.server.stats["too_large"] == 1 and lt.server.stats["bypassed"] == 1
    broken = gzip.compress(LISTED)[:-40]
    s, status, _, _, _ = exchange(lt.port, *encoded_respmod(broken, "gzip", "image/jpeg", 4096), sock=s)
    assert status == 204 and lt.server.stats["bypassed"] == 2 and "undecodable" in caplog.text


def test_early_head_placeholder_is_encoded_like_the_head(icap):
    lt = icap(limits=IcapLimits(early_head="always"))
    noisy = JPEG_HEAD + random.Random(1).randbytes(5000) + MARKER  # does not compress below the preview
    s, status, _, heads, got = exchange(lt.port, *encoded_respmod(gzip.compress(noisy), "gzip", "image/jpeg",
                                                                  1024, allow204=False))
    assert status == 200 and b"Content-Encoding: gzip" in heads
    assert gzip.decompress(got).startswith(b"\x89PNG")
