"""The content of an allow list: entries that override hits, their byte layout and limits (MicroPython-safe).

An allow list is a list file (``agent.core.listfile``) whose manifest says ``"signal": "allow"`` and
whose content is a short table of entries instead of a Bloom filter: false positives an analyst
rejected, few in number and benign, so they travel in the clear and are compared exactly. An entry
allows an image (its SHA-256, SHA-1 or MD5 digest; its PDQ hash or neural code within a small
radius) or one entry of one list (a hit on ``<source>/<list>`` whose matched entry has that id).

Owns: the record layout, the radius bounds, entry ids, and parsing a table of untrusted bytes into
``AllowEntry`` objects with every field checked. Must not touch: the manifest (``listfile``), which
source's allow list may override which hit (``agent.sources``), matching (``agent.allow``).

Layout (docs/list-format.md, "Allow lists"), every record::

    offset  size  field
    0       1     kind: 0 sha256, 1 sha1, 2 md5, 3 pdq, 4 neural, 5 entry
    1       1     radius: 0 for digests and entries; 0..MAX_RADIUS[kind] for pdq and neural
    2       2     u16 L, little-endian: length of the value
    4       L     value: the hash (its signal's length), or '<source>/<list>' NUL '<entry id>' in UTF-8
"""

import struct

try:
    from agent.core.errors import ListFormatError
    from agent.core.signals import HASH_BYTES
except ImportError:  # MicroPython
    from core.errors import ListFormatError
    from core.signals import HASH_BYTES

SIGNAL = "allow"  # the manifest's 'signal' of an allow list: a device that predates it refuses the file
LIST_NAME = "allow"  # an allow list's name: one per source, so its file and topic are fixed
KINDS = ("sha256", "sha1", "md5", "pdq", "neural", "entry")
PERCEPTUAL = ("pdq", "neural")
# Radius: how far (Hamming bits) an image's hash may lie from an allow entry. Bounded at half the
# signal's match threshold (31 for PDQ, 28 for neural), so one entry never opens a ball as wide as a
# listed entry's. Defaults: the same bytes hashed by the hub's reference PDQ and the device's fast
# decode differ by up to 6 bits on the benign samples, JPEG re-encodes mostly by 0-8; neural codes
# of re-encodes differ by up to 3 (docs/list-format.md).
MAX_RADIUS = {"pdq": 15, "neural": 14}
DEFAULT_RADIUS = {"pdq": 8, "neural": 4}
MAX_ENTRIES = 10000  # false positives are few; this bounds memory and the comparisons per hit
MAX_ENTRY_ID_BYTES = 200
MAX_CONTENT_BYTES = MAX_ENTRIES * (4 + 64 + 1 + 64 + 1 + MAX_ENTRY_ID_BYTES)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def check_name(where, value):
    """A source or list name: 1-64 of letters, digits, '.', '_', '-', starting with a letter or digit."""
    if type(value) is not str or not 1 <= len(value) <= 64 or value[0] in "._-":
        raise ListFormatError("%s must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit" % where)
    for c in value:
        if c not in _NAME_CHARS:
            raise ListFormatError("%s must be 1-64 letters, digits, '.', '_' or '-'" % where)
    return value


def check_entry_id(where, value):
    """An entry id as the hub names entries: 1-200 bytes of UTF-8, no control characters."""
    if type(value) is not str or not value:
        raise ListFormatError("%s: the entry id is empty" % where)
    raw = value.encode("utf-8")
    if len(raw) > MAX_ENTRY_ID_BYTES:
        raise ListFormatError("%s: the entry id is %d bytes, at most %d" % (where, len(raw), MAX_ENTRY_ID_BYTES))
    for c in value:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            raise ListFormatError("%s: the entry id holds a control character" % where)
    return value


class AllowEntry:
    """One allow entry: ``kind`` (a signal or 'entry'), and ``hash`` + ``radius``, or ``list`` + ``entry``."""

    def __init__(self, kind, hash=None, radius=0, list=None, entry=None):
        self.kind = kind
        self.hash = hash
        self.radius = radius
        self.list = list  # 'source/list' whose entry is allowed (kind 'entry')
        self.entry = entry

    def check(self, where="allow entry"):
        """Raise ListFormatError unless every field is in range; return self."""
        if self.kind not in KINDS:
            raise ListFormatError("%s: kind %r is not one of %s" % (where, self.kind, ", ".join(KINDS)))
        if self.kind == "entry":
            if type(self.list) is not str or self.list.count("/") != 1:
                raise ListFormatError("%s: the list must be '<source>/<list>'" % where)
            source, name = self.list.split("/")
            check_name(where + ": source", source)
            check_name(where + ": list", name)
            check_entry_id(where, self.entry)
            if self.radius != 0 or self.hash is not None:
                raise ListFormatError("%s: an entry allow has no hash and no radius" % where)
            return self
        if type(self.hash) is not bytes or len(self.hash) != HASH_BYTES[self.kind]:
            raise ListFormatError("%s: a %s hash is %d bytes" % (where, self.kind, HASH_BYTES[self.kind]))
        hi = MAX_RADIUS.get(self.kind, 0)
        if type(self.radius) is not int or not 0 <= self.radius <= hi:
            if hi:
                raise ListFormatError("%s: a %s radius must be a whole number in 0..%d, got %r"
                                      % (where, self.kind, hi, self.radius))
            raise ListFormatError("%s: a %s digest allows by equality; it takes no radius (got %r)"
                                  % (where, self.kind, self.radius))
        return self

    def value(self):
        """The record's value bytes."""
        if self.kind == "entry":
            return self.list.encode("ascii") + b"\x00" + self.entry.encode("utf-8")
        return self.hash

    def to_bytes(self):
        """The record (checked first)."""
        self.check()
        v = self.value()
        return struct.pack("<BBH", KINDS.index(self.kind), self.radius, len(v)) + v

    def describe(self):
        """A short text for logs and `lists inspect`: what is allowed, never more than a hash prefix."""
        if self.kind == "entry":
            return "entry %r of %s" % (self.entry, self.list)
        if self.kind in PERCEPTUAL:
            return "%s %s... within %d" % (self.kind, _hex(self.hash[:4]), self.radius)
        return "%s %s..." % (self.kind, _hex(self.hash[:4]))

    def __eq__(self, other):
        return isinstance(other, AllowEntry) and self.to_bytes() == other.to_bytes()

    def __hash__(self):
        return hash(self.to_bytes())

    def __repr__(self):
        return "AllowEntry(%s)" % self.describe()


def _hex(b):
    return "".join("%02x" % x for x in b)


def encode_content(entries):
    """The content bytes of an allow list: the records sorted by their bytes, each once."""
    records = sorted(set(e.to_bytes() for e in entries))
    if len(records) > MAX_ENTRIES:
        raise ListFormatError("an allow list holds at most %d entries, not %d" % (MAX_ENTRIES, len(records)))
    return b"".join(records)


def parse_content(content, count):
    """The ``count`` entries of an allow list's content; ListFormatError on anything malformed.

    Bounded: at most MAX_ENTRIES records, each value at most 65535 bytes and inside the content."""
    data = bytes(content)
    if type(count) is not int or not 0 <= count <= MAX_ENTRIES:
        raise ListFormatError("allow list entry count must be a whole number in 0..%d" % MAX_ENTRIES)
    out = []
    off = 0
    n = len(data)
    for i in range(count):
        where = "allow entry %d" % i
        if off + 4 > n:
            raise ListFormatError("%s: content truncated (%d of %d entries)" % (where, i, count))
        kind_index, radius, length = struct.unpack_from("<BBH", data, off)
        off += 4
        if kind_index >= len(KINDS):
            raise ListFormatError("%s: unknown kind %d" % (where, kind_index))
        if off + length > n:
            raise ListFormatError("%s: value runs past the end of the content" % where)
        value = data[off:off + length]
        off += length
        kind = KINDS[kind_index]
        if kind == "entry":
            sep = value.find(b"\x00")
            if sep < 0:
                raise ListFormatError("%s: an entry allow needs '<source>/<list>' NUL '<entry id>'" % where)
            try:
                ident = value[:sep].decode("ascii")
                entry = value[sep + 1:].decode("utf-8")
            except (UnicodeError, ValueError):
                raise ListFormatError("%s: list or entry id is not valid text" % where)
            e = AllowEntry("entry", list=ident, entry=entry, radius=radius)
        else:
            e = AllowEntry(kind, hash=value, radius=radius)
        out.append(e.check(where))
    if off != n:
        raise ListFormatError("allow list content has %d bytes after its %d entries" % (n - off, count))
    return out
