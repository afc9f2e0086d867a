"""URL and name lookups in the proxy: plain HTTP blocked before the fetch, CONNECT refused by host, with the
real scanner and policy over signed url/domain lists of benign example names."""

from tests.intake.namelists import http, inspector_factory, origin  # noqa: F401  (fixtures)


def test_proxy_blocks_a_listed_url_before_fetching_and_passes_the_rest(proxy, inspector_factory, origin):
    lt = proxy(inspector_factory())
    listed = "http://127.0.0.1:%d/listed/page.html" % origin.port
    out = http(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n" % listed.encode())
    assert out.startswith(b"HTTP/1.1 403") and b"<p>listed</p>" not in out and b"text/html" in out
    # case, dot segments and escapes do not get around it
    sneaky = "http://127.0.0.1:%d/LISTED/../listed/./%%70age.html" % origin.port
    out = http(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % sneaky.encode())
    assert out.startswith(b"HTTP/1.1 403")
    url = "http://127.0.0.1:%d/open.html" % origin.port
    out = http(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % url.encode())
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"<p>open</p>" * 100)
    assert lt.server.stats["names_blocked"] == 2 and lt.server.inspector.bodies == 0


def test_proxy_refuses_connect_to_a_listed_domain(proxy, inspector_factory):
    lt = proxy(inspector_factory())
    out = http(lt.port, b"CONNECT www.blocked.example.org:443 HTTP/1.1\r\nHost: www.blocked.example.org:443\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 403")
    assert lt.server.stats["names_blocked"] == 1 and lt.server.stats["tunnels"] == 0


def test_proxy_keeps_the_connection_after_a_blocked_get(proxy, inspector_factory, origin):
    lt = proxy(inspector_factory())
    listed = "http://127.0.0.1:%d/listed/x" % origin.port
    url = "http://127.0.0.1:%d/open.html" % origin.port
    out = http(lt.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\nGET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               % (listed.encode(), url.encode()))
    assert out.startswith(b"HTTP/1.1 403") and b"HTTP/1.1 200" in out and out.endswith(b"<p>open</p>" * 100)
