"""The answer a client gets instead of blocked content: an explanation page, a placeholder image or 403.

Owns the wording and shape of block responses for every intake (ICAP, proxy). It must not log, scan
or look at who asked: the page names the blocked host (the hosting side) and nothing about the client.

Hotlines recommend an explanatory page over a bare error (it deters, and it points people who need
help to it), so a browser navigating to blocked content gets the HTML page; an <img>/fetch request
gets a placeholder image (or a plain 403 when configured), because an HTML body inside an <img> tag
shows nothing to anyone.
"""

from __future__ import annotations

import html
import os
import string
from typing import Optional, Tuple
from urllib.parse import urlsplit

from agent.core.errors import ConfigError
from agent.intake import host_of
from agent.intake.http1 import Head

_TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blockpage.html")

_PLACEHOLDER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">'
    '<rect width="320" height="240" fill="#ddd"/>'
    '<text x="160" y="125" font-family="sans-serif" font-size="20" text-anchor="middle" fill="#555">'
    "Blocked image</text></svg>"
).encode("ascii")

IMAGE_MODES = ("placeholder", "403")

_FALLBACK_HTML = (b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Content blocked</title></head>"
                  b"<body><h1>This content was blocked</h1><p>It matched a list of known child sexual abuse "
                  b"material.</p></body></html>")


def _png(width: int, height: int, grey: int) -> bytes:
    """A flat grey PNG, built with zlib only (used where the status and type are already sent)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([grey]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# A raster placeholder for blocks decided after the HTTP head went out (browsers sniff image bytes,
# so it shows whatever image type the head announced).
PLACEHOLDER_PNG = _png(64, 48, 0xDD)


class BlockPage:
    """Builds block responses. All text is configurable; the template uses ``${name}`` fields."""

    def __init__(self, contact_url: str = "https://www.inhope.org/",
                 contact_text: str = "find the hotline for your country (INHOPE)",
                 list_owner: str = "a child protection hotline", operator_text: str = "",
                 image_mode: str = "placeholder", template: Optional[str] = None):
        if image_mode not in IMAGE_MODES:
            raise ConfigError("image_mode must be one of %s, not %r" % (", ".join(IMAGE_MODES), image_mode))
        if urlsplit(contact_url).scheme not in ("http", "https", "mailto", "tel"):
            raise ConfigError("contact_url must be an http(s), mailto or tel URL, not %r" % contact_url)
        if template is None:
            with open(_TEMPLATE_PATH, encoding="utf-8") as fh:
                template = fh.read()
        self._template = string.Template(template)
        self._fields = {
            "contact_url": html.escape(contact_url, quote=True),
            "contact_text": html.escape(contact_text),
            "list_owner": html.escape(list_owner),
            "operator_text": html.escape(operator_text),
        }
        self.image_mode = image_mode

    def html(self, url: Optional[str]) -> bytes:
        """The explanation page for content fetched from ``url`` (any string: never raises on it)."""
        host = host_of(url)
        fields = dict(self._fields, host=html.escape("unknown" if host == "-" else host))
        try:
            return self._template.safe_substitute(fields).encode("utf-8", "replace")
        except Exception:  # a broken custom template must not turn a block into a pass
            return _FALLBACK_HTML

    @staticmethod
    def wants_html(request: Optional[Head], response_type: str = "") -> bool:
        """Whether the client is a browser navigating (Accept names text/html) rather than an embed."""
        if request is not None:
            accept = (request.get("accept") or "").lower()
            if accept:
                return "text/html" in accept
        return not (response_type or "").lower().startswith("image/")

    def response(self, request: Optional[Head], url: Optional[str], response_type: str = "",
                 version: str = "HTTP/1.1") -> Tuple[Head, bytes]:
        """The HTTP response head and body that replace blocked content. Never raises: a block always
        gets a block answer (``fallback`` when anything about the inputs is unusable)."""
        try:
            return self._response(request, url, response_type, version)
        except Exception:
            return self.fallback(version)

    @staticmethod
    def fallback(version: str = "HTTP/1.1") -> Tuple[Head, bytes]:
        """A bare 403 with the static page: needs nothing from the request."""
        if not (isinstance(version, str) and version in ("HTTP/1.0", "HTTP/1.1")):
            version = "HTTP/1.1"
        return Head((version, "403", "Forbidden"), (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(_FALLBACK_HTML))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        )), _FALLBACK_HTML

    def _response(self, request, url, response_type, version):
        if not (isinstance(version, str) and version in ("HTTP/1.0", "HTTP/1.1")):
            version = "HTTP/1.1"
        if self.wants_html(request, response_type):
            body, ctype = self.html(url), "text/html; charset=utf-8"
        elif self.image_mode == "placeholder":
            body, ctype = _PLACEHOLDER_SVG, "image/svg+xml"
        else:
            body, ctype = b"Blocked: known child sexual abuse material.\n", "text/plain; charset=utf-8"
        head = Head((version, "403", "Forbidden"), (
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ))
        return head, body
