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
                      (an allow list, ``"signal": "allow"``: its entries, agent.core.allowlist)

The manifest binds the content through ``content_sha256``, so one signature covers everything.
"""

import json
import struct

try:
    from agent.core import allowlist, fuse
    from agent.core.errors import ListFormatError
except ImportError:  # MicroPython
    from core import allowlist, fuse
    from core.errors import ListFormatError

MAGIC = b"GWL1"
FORMAT_VERSION = 1
SIGNALS = ("sha256", "sha1", "md5", "url", "domain", "pdq", "neural")
REQUIRED = ("format", "source", "list", "signal", "version", "created", "expires", "key_id",
            "content_length", "content_sha256", "filter")
FILTER_REQUIRED = ("type", "salt", "entries")
FILTER_TYPES = {"bloom": ("m", "k"), fuse.TYPE: ("segment_length", "segment_count", "array_length")}
PERCEPTUAL_BITS = {"pdq": 256, "neural": 128}  # hash bits of the signals that need an 'lsh' section


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


_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_HEX = "0123456789abcdef"
# Ranges of the fields a device acts on. A signed list is still checked: a hub bug or a stolen key
# must not make a scan raise, loop or allocate without bound (flip_bits/depth set the probe count).
LSH_RANGES = {"bands": (1, 64), "flip_bits": (0, 32), "depth": (0, 3), "threshold": (0, 256),
              "min_quality": (0, 100), "key_bits": (1, 64), "min_bands": (1, 64)}
MAX_PROBES_PER_BAND = 1024  # sum of C(flip_bits, d) for d <= depth; the default (6, 2) gives 22


def _int_in(where, value, lo, hi):
    # type() rather than isinstance: True and False are ints too, and JSON says what it means
    if type(value) is not int or not lo <= value <= hi:
        raise ListFormatError("%s must be a whole number in %d..%d, got %r" % (where, lo, hi, value))
    return value


def _text(where, value, chars, lo, hi):
    if type(value) is not str or not lo <= len(value) <= hi:
        raise ListFormatError("%s must be a string of %d..%d characters" % (where, lo, hi))
    for c in value:
        if c not in chars:
            raise ListFormatError("%s holds a character outside %r" % (where, chars))
    return value


def _choose(n, r):
    out = 1
    for i in range(r):
        out = out * (n - i) // (i + 1)
    return out


def probes_per_band(flip_bits, depth):
    """How many keys multi-probe asks per band and dihedral variant."""
    return sum(_choose(flip_bits, d) for d in range(depth + 1))


def check_manifest(manifest):
    """Raise ListFormatError unless every field has the type and range the agent relies on."""
    if not isinstance(manifest, dict):
        raise ListFormatError("manifest is not a JSON object")
    allow = manifest.get("signal") == allowlist.SIGNAL
    for name in REQUIRED:
        if name not in manifest and not (allow and name == "filter"):
            raise ListFormatError("manifest lacks field '%s'" % name)
    if manifest["format"] != FORMAT_VERSION or type(manifest["format"]) is not int:
        raise ListFormatError("list format %r is not supported (this agent reads %d)"
                              % (manifest["format"], FORMAT_VERSION))
    if type(manifest["signal"]) is not str or (manifest["signal"] not in SIGNALS and not allow):
        raise ListFormatError("unknown signal type %r" % (manifest["signal"],))
    _text("manifest field 'source'", manifest["source"], _NAME_CHARS, 1, 64)
    _text("manifest field 'list'", manifest["list"], _NAME_CHARS, 1, 64)
    _text("manifest field 'key_id'", manifest["key_id"], _NAME_CHARS, 1, 64)
    _text("manifest field 'content_sha256'", manifest["content_sha256"], _HEX, 64, 64)
    _int_in("manifest field 'version'", manifest["version"], 1, 0xFFFFFFFFFFFF)
    for name in ("created", "expires"):
        _int_in("manifest field '%s'" % name, manifest[name], 0, 0xFFFFFFFFFF)
    if allow:
        return check_allow_manifest(manifest)
    if manifest["list"] == allowlist.LIST_NAME:
        raise ListFormatError("list name '%s' is reserved for a source's allow list" % allowlist.LIST_NAME)
    _int_in("manifest field 'content_length'", manifest["content_length"], 1, 1 << 29)
    filt = manifest["filter"]
    if not isinstance(filt, dict):
        raise ListFormatError("manifest field 'filter' is not an object")
    for name in FILTER_REQUIRED:
        if name not in filt:
            raise ListFormatError("filter lacks field '%s'" % name)
    kind = filt["type"]
    if type(kind) is not str or kind not in FILTER_TYPES:
        raise ListFormatError("filter type %r is not supported (this agent reads %s)"
                              % (kind, ", ".join(sorted(FILTER_TYPES))))
    for name in FILTER_TYPES[kind]:
        if name not in filt:
            raise ListFormatError("a %s filter lacks field '%s'" % (kind, name))
    _text("filter field 'salt'", filt["salt"], _HEX, 32, 32)
    _int_in("filter field 'entries'", filt["entries"], 0, 1 << 40)
    for name, hi in (("capacity", 1 << 40), ("keys_per_entry", 64), ("keys", 1 << 46)):
        if name in filt:
            _int_in("filter field '%s'" % name, filt[name], 0, hi)
    if "fp_rate" in filt and (type(filt["fp_rate"]) not in (int, float) or not 0 < filt["fp_rate"] < 1):
        raise ListFormatError("filter field 'fp_rate' must be a number between 0 and 1")
    if kind == "bloom":
        _int_in("filter field 'm'", filt["m"], 64, 0xFFFFFFFF)
        _int_in("filter field 'k'", filt["k"], 1, 64)
        if manifest["content_length"] != (filt["m"] + 7) // 8:
            raise ListFormatError("content length %d does not fit a filter of %d bits"
                                  % (manifest["content_length"], filt["m"]))
    else:
        fuse.check_params(filt["segment_length"], filt["segment_count"], filt["array_length"],
                          manifest["content_length"])
    lsh = manifest.get("lsh")
    signal = manifest["signal"]
    if signal in PERCEPTUAL_BITS and lsh is None:
        raise ListFormatError("a %s list needs its 'lsh' section (bands, flip_bits, depth, threshold)" % signal)
    if lsh is not None:
        check_lsh(lsh, PERCEPTUAL_BITS.get(signal, 256))
    if "sealed" in manifest:
        check_sealed(manifest["sealed"])
    if signal == "neural":
        # codes of different networks are not comparable: the list names the model that made them
        if "model" not in manifest:
            raise ListFormatError("a neural list needs its 'model' field (the network that made its codes)")
        _text("manifest field 'model'", manifest["model"], _NAME_CHARS, 1, 64)
        if manifest["model"][0] in "._-":
            raise ListFormatError("manifest field 'model' must start with a letter or digit")
    return manifest


SEALED_SCHEME = "gw-sealed-1"


def check_sealed(section):
    """The ``sealed`` section: how the hub's sealed entries of this version are committed
    (agent.confirm.sealed): scheme, bucket count (a power of two), Merkle root, OPRF key id, token key."""
    if not isinstance(section, dict):
        raise ListFormatError("manifest field 'sealed' is not an object")
    if section.get("scheme") != SEALED_SCHEME:
        raise ListFormatError("sealed scheme %r is not supported (this agent reads %s)"
                              % (section.get("scheme"), SEALED_SCHEME))
    n = _int_in("sealed field 'buckets'", section.get("buckets"), 16, 1 << 22)
    if n & (n - 1):
        raise ListFormatError("sealed field 'buckets' must be a power of two, got %d" % n)
    _text("sealed field 'root'", section.get("root"), _HEX, 64, 64)
    _text("sealed field 'key'", section.get("key"), _HEX, 16, 16)
    _text("sealed field 'tokens'", section.get("tokens"), _HEX, 64, 64)
    return section


def check_allow_manifest(manifest):
    """The fields of an allow list (``"signal": "allow"``, agent.core.allowlist): an ``allow`` section
    with the entry count (and the neural model its codes come from, if any), no filter."""
    if manifest["list"] != allowlist.LIST_NAME:
        raise ListFormatError("an allow list is named '%s', not %r" % (allowlist.LIST_NAME, manifest["list"]))
    for name in ("filter", "lsh"):
        if name in manifest:
            raise ListFormatError("an allow list has no '%s' section" % name)
    _int_in("manifest field 'content_length'", manifest["content_length"], 0, allowlist.MAX_CONTENT_BYTES)
    section = manifest.get("allow")
    if not isinstance(section, dict):
        raise ListFormatError("an allow list needs its 'allow' section (the entry count)")
    _int_in("allow field 'entries'", section.get("entries"), 0, allowlist.MAX_ENTRIES)
    if manifest["content_length"] < 4 * section["entries"]:
        raise ListFormatError("content length %d is too short for %d allow entries"
                              % (manifest["content_length"], section["entries"]))
    if "model" in section:
        _text("allow field 'model'", section["model"], _NAME_CHARS, 1, 64)
        if section["model"][0] in "._-":
            raise ListFormatError("allow field 'model' must start with a letter or digit")
    return manifest


def check_lsh(lsh, nbits=256):
    """Raise ListFormatError unless the LSH parameters are complete and within range for an
    ``nbits``-bit hash (256 for PDQ, 128 for neural)."""
    if not isinstance(lsh, dict):
        raise ListFormatError("manifest field 'lsh' is not an object")
    for name in ("bands", "flip_bits", "depth", "threshold"):
        if name not in lsh:
            raise ListFormatError("lsh lacks field '%s'" % name)
    for name in LSH_RANGES:
        if name in lsh:
            lo, hi = LSH_RANGES[name]
            _int_in("lsh field '%s'" % name, lsh[name], lo, hi)
    if lsh["threshold"] > nbits:
        raise ListFormatError("lsh threshold %d exceeds the %d bits of the hash" % (lsh["threshold"], nbits))
    if lsh["bands"] > nbits:
        raise ListFormatError("lsh bands %d exceed the %d bits of the hash" % (lsh["bands"], nbits))
    if lsh.get("min_bands", 1) > lsh["bands"]:
        raise ListFormatError("lsh min_bands %d exceeds the list's %d bands" % (lsh["min_bands"], lsh["bands"]))
    band_width = (nbits + lsh["bands"] - 1) // lsh["bands"]
    if lsh["flip_bits"] > band_width:
        raise ListFormatError("lsh flip_bits %d exceeds the %d bits of a band" % (lsh["flip_bits"], band_width))
    n = probes_per_band(lsh["flip_bits"], lsh["depth"])
    if n > MAX_PROBES_PER_BAND:
        raise ListFormatError("lsh flip_bits %d with depth %d asks %d probes per band, over %d"
                              % (lsh["flip_bits"], lsh["depth"], n, MAX_PROBES_PER_BAND))
    return lsh


class ListFile:
    """A parsed list file: manifest, the signed bytes, signature and content. Nothing is verified yet."""

    def __init__(self, manifest, manifest_bytes, signature, content, allow=None):
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.signature = signature
        self.content = content
        self.allow = allow  # an allow list's entries (agent.core.allowlist), parsed and checked

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
    content = memoryview(data)[start:start + c]
    allow = None
    if manifest["signal"] == allowlist.SIGNAL:
        allow = allowlist.parse_content(content, manifest["allow"]["entries"])
        if "model" not in manifest["allow"] and [e for e in allow if e.kind == "neural"]:
            # codes of different networks are not comparable: say which network made them
            raise ListFormatError("an allow list with neural entries needs 'model' in its 'allow' section")
    return ListFile(manifest, manifest_bytes, signature, content, allow)
