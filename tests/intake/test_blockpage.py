"""The block page never raises on a Host or URL: a block always produces a block answer."""

import pytest
from hypothesis import given, settings, strategies as st

from agent.intake.blockpage import BlockPage
from agent.intake.http1 import Head


def browser(host):
    return Head(("GET", "/x.jpg", "HTTP/1.1"), (("Host", host), ("Accept", "text/html,*/*")))


@pytest.mark.parametrize("url", ["http://[::1/x.jpg", "http://[::1", "http://[v1.x/", "http://\u2100b@x/",
                                 "http://<script>alert(1)</script>/", "http://a\x00b/", None, "", b"http://b/"])
def test_hostile_urls_give_the_page(url):
    head, body = BlockPage().response(browser("[::1"), url, "image/jpeg")
    assert head.status == 403 and b"This content was blocked" in body and b"<script>" not in body
    assert int(head.get("content-length")) == len(body)


def test_host_on_the_page_is_the_cleaned_host():
    _, body = BlockPage().response(browser("x"), "http://[::1/a.jpg", "image/jpeg")
    assert b"Blocked address: [::1</small>" in body
    _, body = BlockPage().response(browser("x"), None, "")
    assert b"Blocked address: unknown" in body


def test_broken_template_and_odd_arguments_still_block():
    page = BlockPage(template="${host} ${broken")
    head, body = page.response(browser("x"), "http://ok.example/", "image/png")
    assert head.status == 403 and body
    head, body = BlockPage().response(None, "http://ok.example/", None, version="ICAP/9")
    assert head.start == ("HTTP/1.1", "403", "Forbidden")
    head, body = BlockPage.fallback()
    assert head.status == 403 and b"blocked" in body


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30), st.sampled_from(["", "image/jpeg", "text/html"]))
def test_never_raises(url, accept, rtype):
    req = Head(("GET", "/", "HTTP/1.1"), (("Accept", accept),))
    head, body = BlockPage().response(req, "http://" + url, rtype)
    assert head.status == 403 and int(head.get("content-length")) == len(body)
    head.serialize()
