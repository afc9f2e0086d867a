"""The block answer: wording, configuration, HTML vs image requests, no client data, bad settings."""

import io

import pytest

from agent.intake.blockpage import PLACEHOLDER_PNG, BlockPage
from agent.core.errors import ConfigError
from agent.intake.http1 import Head


def req(accept):
    return Head(("GET", "/x.jpg", "HTTP/1.1"), (("Host", "cdn.example"), ("Accept", accept),
                                                ("Cookie", "session=SECRET"), ("User-Agent", "UA-SECRET")))


def test_browser_navigation_gets_the_explanation_page():
    page = BlockPage(contact_url="https://hotline.example/help", contact_text="Talk to us", list_owner="Hotline X",
                     operator_text="Run by Example School.")
    head, body = page.response(req("text/html,application/xhtml+xml"), "http://cdn.example/x.jpg", "image/jpeg")
    text = body.decode()
    assert head.status == 403 and head.get("content-type").startswith("text/html")
    assert int(head.get("content-length")) == len(body) and head.get("cache-control") == "no-store"
    assert "matched a list of known child sexual abuse material" in text and "Hotline X" in text
    assert '<a href="https://hotline.example/help">Talk to us</a>' in text and "Example School" in text
    assert "cdn.example" in text and "SECRET" not in text


def test_embedded_images_get_a_placeholder_or_403():
    head, body = BlockPage().response(req("image/avif,image/webp,*/*"), "http://cdn.example/x.jpg", "image/jpeg")
    assert head.status == 403 and head.get("content-type") == "image/svg+xml" and body.startswith(b"<svg")
    head, body = BlockPage(image_mode="403").response(req("image/*"), None, "image/png")
    assert head.status == 403 and head.get("content-type").startswith("text/plain")


def test_no_request_head_falls_back_on_the_response_type():
    assert BlockPage.wants_html(None, "image/jpeg") is False
    assert BlockPage.wants_html(None, "") is True


def test_values_are_escaped_and_template_is_configurable():
    page = BlockPage(list_owner="<script>x</script>", template="owner=${list_owner} host=${host}")
    body = page.html("http://evil.example/<b>").decode()
    assert "<script>" not in body and "&lt;script&gt;" in body and "host=evil.example" in body


@pytest.mark.parametrize("kw", [{"image_mode": "gif"}, {"contact_url": "javascript:alert(1)"}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        BlockPage(**kw)


def test_placeholder_png_decodes():
    from PIL import Image
    im = Image.open(io.BytesIO(PLACEHOLDER_PNG))
    im.load()
    assert im.size == (64, 48)
