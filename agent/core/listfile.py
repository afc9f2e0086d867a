"""The portable signed list file (``.gwl``): byte layout, parsing and serialisation (MicroPython-safe).

Owns: the container layout and the manifest's required fields. Must not touch: signature
verification (``agent.lists`` does it with ``cryptography``; MicroPython devices rely on a verifying
host) or acceptance policy.

Layout, all integers little-endian (docs/list-format.md):

    offset      size  field
    0           4     magic b"GWL1"
    4           4     u32 H: manifest length
    8           H     manifest: UTF-8 JSON object, keys sorted, no insignificant whitespace
    8+H         2     u16 S: signature length (64 for Ed25519)
    10+H        S     signature over bytes [0, 8+H): magic, length and manifest
    10+H+S      C     content: the filter bit array; C == manifest["content_length"]

The manifest binds the content through ``content_sha256``, so one signature covers everything.
"""

import json
import struct

try:
    from agent.core.errors import ListFormatError
except ImportError:  # MicroPython
    from core.errors import ListFormatError

MAGIC = b"GWL1"
FORMAT_VERSION = 1
SIGNALS = ("sha256", "sha1", "md5", "pdq", "neural")
REQUIRED = ("format", "source", "list", "signal", "version", "created", "expires", "key_id",
            "content_length", "content_sha256", "filter")
FILTER_REQUIRED = ("type", "m", "k", "salt", "entries")


def _u32(data, off):
    return struct.unpack_from("<I", data, off)[0]


def _canonical(obj):
    # MicroPython's json.dumps has no sort_keys: build the same canonical text by hand
    # (manifests hold ASCII names and integers, where both encoders agree byte for byte).
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + _canonical(obj[k]) for k in sorted(obj)) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in obj) + "]"
    return json.dumps(obj)


def encode_manifest(manifest):
    """Canonical manifest bytes: sorted keys, compact separators, UTF-8."""
    try:
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    except TypeError:  # pragma: no cover - MicroPython
        text = _canonical(manifest)
    return text.encode("utf-8")


def signed_part(manifest_bytes):
    """The bytes a signature covers: magic, manifest length and manifest."""
    return MAGIC + struct.pack("<I", len(manifest_bytes)) + manifest_bytes


def serialise(manifest_bytes, signature, content):
    """The whole file from its parts."""
    return signed_part(manifest_bytes) + struct.pack("<H", len(signature)) + bytes(signature) + bytes(content)


def check_manifest(manifest):
    """Raise ListFormatError unless the manifest has every required field with a sane type."""
    if not isinstance(manifest, dict):
        raise ListFormatError("manifest is not a JSON object")
    for name in REQUIRED:
        if name not in manifest:
            raise ListFormatError("manifest lacks field '%s'" % name)
    if manifest["format"] != FORMAT_VERSION:
        raise ListFormatError("list format %r is not supported (this agent reads %d)"
                              % (manifest["format"], FORMAT_VERSION))
    if manifest["signal"] not in SIGNALS:
        raise ListFormatError("unknown signal type %r" % (manifest["signal"],))
    for name in ("version", "created", "expires", "content_length"):
        if not isinstance(manifest[name], int) or manifest[name] < 0:
            raise ListFormatError("manifest field '%s' must be a non-negative integer" % name)
    filt = manifest["filter"]
    if not isinstance(filt, dict):
        raise ListFormatError("manifest field 'filter' is not an object")
    for name in FILTER_REQUIRED:
        if name not in filt:
            raise ListFormatError("filter lacks field '%s'" % name)
    if filt["type"] != "bloom":
        raise ListFormatError("filter type %r is not supported" % (filt["type"],))
    if manifest["content_length"] != (filt["m"] + 7) // 8:
        raise ListFormatError("content length %d does not fit a filter of %d bits"
                              % (manifest["content_length"], filt["m"]))
    return manifest


class ListFile:
    """A parsed list file: manifest, the signed bytes, signature and content. Nothing is verified yet."""

    def __init__(self, manifest, manifest_bytes, signature, content):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.signature = signature
        self.content = content

    def signed_bytes(self):
        """The bytes the signature must cover."""
        return signed_part(self.manifest_bytes)

    def to_bytes(self):
        """Serialise back to the exact file bytes."""
        return serialise(self.manifest_bytes, self.signature, self.content)


def parse(data, max_bytes=None):
    """Parse list file bytes into a ListFile; raise ListFormatError on any malformation."""
    n = len(data)
    if max_bytes is not None and n > max_bytes:
        raise ListFormatError("list file is %d bytes, over the %d-byte cap" % (n, max_bytes))
    if n < 10 or bytes(data[0:4]) != MAGIC:
        raise ListFormatError("not a gatewatch list file (bad magic)")
    h = _u32(data, 4)
    if 8 + h + 2 > n:
        raise ListFormatError("list file truncated in the manifest")
    manifest_bytes = bytes(data[8:8 + h])
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        raise ListFormatError("manifest is not valid JSON")
    check_manifest(manifest)
    s = struct.unpack_from("<H", data, 8 + h)[0]
    start = 10 + h + s
    if start > n:
        raise ListFormatError("list file truncated in the signature")
    signature = bytes(data[10 + h:start])
    c = manifest["content_length"]
    if n - start < c:
        raise ListFormatError("list file truncated: content has %d of %d bytes" % (n - start, c))
    if n - start > c:
        raise ListFormatError("list file has %d trailing bytes after the content" % (n - start - c))
    return ListFile(manifest, manifest_bytes, signature, memoryview(data)[start:start + c])
