"""URL lookups over ICAP: REQMOD answers a listed URL with the block page before the fetch; RESPMOD blocks a
listed URL whatever its body (e2guardian sends only RESPMOD), with the real scanner and policy."""

from tests.intake.icap.support import REQ_HDR, connect, read_icap_response, respmod
from tests.intake.namelists import inspector_factory  # noqa: F401  (fixture)


def reqmod(req_hdr, preview=None, body=b""):
    head = [b"REQMOD icap://127.0.0.1/reqmod ICAP/1.0", b"Host: 127.0.0.1", b"Allow: 204"]
    if body:
        head.append(b"Encapsulated: req-hdr=0, req-body=%d" % len(req_hdr))
        if preview is not None:
            head.append(b"Preview: %d" % preview)
        tail = b"%x\r\n%s\r\n0%s\r\n\r\n" % (len(body), body, b"; ieof" if preview is not None else b"")
    else:
        head.append(b"Encapsulated: req-hdr=0, null-body=%d" % len(req_hdr))
        tail = b""
    return b"\r\n".join(head) + b"\r\n\r\n" + req_hdr + tail


def test_icap_reqmod_answers_a_listed_url_with_the_block_page(icap, inspector_factory):
    lt = icap(inspector_factory())
    s = connect(lt.port)
    listed = b"GET http://origin.test/pics/a.jpg HTTP/1.1\r\nHost: origin.test\r\nAccept: text/html\r\n\r\n"
    s.sendall(reqmod(listed))
    status, fields, heads, body = read_icap_response(s)
    assert status == 200 and heads.startswith(b"HTTP/1.1 403") and b"<html" in body.lower()
    # the same connection goes on: an unlisted URL is left alone (204), an upload with a listed target is
    # answered after its body (the client must not be left sending it)
    s.sendall(reqmod(b"GET http://origin.test/pics/b.jpg HTTP/1.1\r\nHost: origin.test\r\n\r\n"))
    assert read_icap_response(s)[0] == 204
    s.sendall(reqmod(b"POST /listed/form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n", body=b"hello"))
    assert read_icap_response(s)[0] == 200
    s.sendall(reqmod(b"POST /listed/form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n", preview=10,
                     body=b"hello"))
    assert read_icap_response(s)[0] == 200
    s.close()
    assert lt.server.stats["names_blocked"] == 3


def test_icap_respmod_blocks_a_listed_url_whatever_the_body(icap, inspector_factory):
    lt = icap(inspector_factory())
    s = connect(lt.port)
    first, rest = respmod(b"plain text, not an image" * 100, "text/plain", preview=64, req_hdr=REQ_HDR)
    s.sendall(first)
    status, fields, heads, body = read_icap_response(s)
    assert status == 200 and heads.startswith(b"HTTP/1.1 403")
    first, rest = respmod(b"plain text" * 10, "text/plain", preview=64,
                          req_hdr=b"GET http://origin.test/ok.txt HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    s.sendall(first)
    assert read_icap_response(s)[0] == 204
    s.close()
    assert lt.server.inspector.bodies == 0
