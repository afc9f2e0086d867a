"""host_of never raises and never lets anything but host characters into a log line or a page."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.intake import host_of


@pytest.mark.parametrize("url, host", [
    ("http://origin.test/a.jpg", "origin.test"),
    ("http://User:Pw@CDN.Example:8080/p?q=1#f", "cdn.example"),
    ("http://[::1]:80/x", "::1"),
    ("http://[::1/x", "[::1"),  # urlsplit raises "Invalid IPv6 URL": the host is still named
    ("http://[::1", "[::1"),
    ("http://x@[::1/x", "[::1"),
    ("http://[v1.x/", "[v1.x"),
    ("http://a\nb.example/", "ab.example"),
    ("http://evil\x1b[31m.example/", "evil?[31m.example"),
    ("http://exa%mple/", "exa?mple"),
    (b"http://bytes.example/", "bytes.example"),
    ("", "-"), (None, "-"), (12, "-"), ("http:///nohost", "-"),
])
def test_hosts(url, host):
    assert host_of(url) == host


def test_netloc_that_urlsplit_refuses():
    # NFKC-normalising netlocs make urlsplit raise ValueError (bpo-36216).
    assert host_of("http://a\u2100/b") == "a?"
    assert host_of("http://\u2100b@x.example/") == "x.example"


def test_bounded():
    assert len(host_of("http://" + "a" * 100000 + "/")) <= 255


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80), st.text(max_size=40).map(lambda t: "http://" + t),
                 st.text(alphabet="[]:@/?#%\\.a1\u00b2\u2100 \t\r\n", max_size=30).map(lambda t: "http://" + t)))
def test_never_raises_and_is_clean(url):
    host = host_of(url)
    assert isinstance(host, str) and 0 < len(host) <= 255
    assert all(c.isalnum() or c in ".-_:[]?" for c in host) or host == "-"
