"""Allow lists in the core: the record layout, its limits, and every malformation the parser refuses.

Built in the test from known parts (the signature is 64 placeholder bytes: verifying it is the full
agent's job). Runs unchanged under CPython and MicroPython.
"""

import struct

from tests.core import support

allowlist = support.import_core("allowlist")
listfile = support.import_core("listfile")
errors = support.import_core("errors")

SHA = bytes(range(32))
PDQ = bytes(range(100, 132))
NEURAL = bytes(range(16))


def entries():
    E = allowlist.AllowEntry
    return [E("sha256", hash=SHA), E("md5", hash=SHA[:16]), E("pdq", hash=PDQ, radius=8),
            E("neural", hash=NEURAL, radius=4), E("entry", list="hl1/known", entry="img 1.jpg")]


def manifest(content, n, **over):
    m = {"format": 1, "source": "hl1", "list": "allow", "signal": "allow", "version": 2,
         "created": 1700000000, "expires": 1900000000, "key_id": "k1", "content_length": len(content),
         "content_sha256": "00" * 32, "allow": {"entries": n, "model": "neural-v1"}}
    return support.overridden(m, over)


def file_bytes(content=None, n=None, **over):
    if content is None:
        content = allowlist.encode_content(entries())
        n = len(entries())
    return listfile.serialise(listfile.encode_manifest(manifest(content, n, **over)), b"S" * 64, content)


def refuse(data, words):
    exc = support.raises(errors.ListFormatError, listfile.parse, data)
    assert words in str(exc), "%r not in %r" % (words, str(exc))


def record(kind, radius, value):
    return struct.pack("<BBH", kind, radius, len(value)) + value


def test_round_trip_of_every_kind():
    lf = listfile.parse(file_bytes())
    got = sorted(e.describe() for e in lf.allow)
    assert got == sorted(e.describe() for e in entries()), got
    by_kind = dict((e.kind, e) for e in lf.allow)
    assert by_kind["pdq"].hash == PDQ and by_kind["pdq"].radius == 8
    assert by_kind["entry"].list == "hl1/known" and by_kind["entry"].entry == "img 1.jpg"
    assert lf.manifest["allow"]["entries"] == 5


def test_layout_is_documented():
    # kind, radius, u16 length little-endian, value
    data = allowlist.AllowEntry("pdq", hash=PDQ, radius=9).to_bytes()
    assert data == bytes([3, 9]) + struct.pack("<H", 32) + PDQ
    data = allowlist.AllowEntry("entry", list="a/b", entry="x").to_bytes()
    assert data == bytes([5, 0, 5, 0]) + b"a/b\x00x"


def test_encoding_is_sorted_and_each_entry_once():
    twice = entries() + entries()
    assert allowlist.encode_content(twice) == allowlist.encode_content(list(reversed(entries())))


def test_empty_allow_list_is_a_list():
    # a version with no entries withdraws every earlier one
    lf = listfile.parse(file_bytes(b"", 0))
    assert lf.allow == [] and lf.manifest["content_length"] == 0


def test_radius_is_bounded_per_signal():
    hi = allowlist.MAX_RADIUS["pdq"]
    ok = listfile.parse(file_bytes(record(3, hi, PDQ), 1))
    assert ok.allow[0].radius == hi
    refuse(file_bytes(record(3, hi + 1, PDQ), 1), "radius")
    refuse(file_bytes(record(3, 255, PDQ), 1), "radius")
    refuse(file_bytes(record(4, allowlist.MAX_RADIUS["neural"] + 1, NEURAL), 1), "radius")
    refuse(file_bytes(record(0, 1, SHA), 1), "no radius")  # a digest allows by equality only
    refuse(file_bytes(record(5, 3, b"a/b\x00x"), 1), "no hash and no radius")


def test_hostile_records_are_refused():
    refuse(file_bytes(record(6, 0, SHA), 1), "unknown kind")
    refuse(file_bytes(record(0, 0, SHA[:31]), 1), "32 bytes")
    refuse(file_bytes(record(3, 0, PDQ + b"x"), 1), "32 bytes")
    refuse(file_bytes(record(5, 0, b"a/b"), 1), "NUL")
    refuse(file_bytes(record(5, 0, b"a/b\x00"), 1), "empty")
    refuse(file_bytes(record(5, 0, b"a/b\x00bad\x07id"), 1), "control")
    refuse(file_bytes(record(5, 0, b"a/b\x00\xff\xfe"), 1), "not valid text")
    refuse(file_bytes(record(5, 0, b"ab\x00x"), 1), "<source>/<list>")
    refuse(file_bytes(record(5, 0, b"a/../b\x00x"), 1), "<source>/<list>")
    refuse(file_bytes(record(5, 0, b"a/b\x00" + b"x" * 201), 1), "at most 200")
    # a length that runs past the content, counts that do not fit it
    refuse(file_bytes(struct.pack("<BBH", 0, 0, 60000) + SHA, 1), "past the end")
    refuse(file_bytes(record(0, 0, SHA) + b"\x00", 1), "after its 1 entries")
    refuse(file_bytes(record(0, 0, SHA), 10), "too short")
    refuse(file_bytes(record(0, 0, SHA) * 2, 3), "truncated")


def test_wrong_types_and_ranges_in_the_manifest_are_refused():
    content = record(0, 0, SHA)
    for value in ("1", 1.0, True, -1, None, allowlist.MAX_ENTRIES + 1):
        refuse(file_bytes(content, 1, allow={"entries": value}), "allow field 'entries'")
    refuse(file_bytes(content, 1, allow="1"), "'allow' section")
    refuse(file_bytes(content, 1, allow=None), "'allow' section")
    refuse(file_bytes(content, 1, allow={"entries": 1, "model": 7}), "model")
    refuse(file_bytes(content, 1, allow={"entries": 1, "model": "../x"}), "model")
    refuse(file_bytes(content, 1, list="fp"), "named 'allow'")
    refuse(file_bytes(content, 1, filter={"type": "bloom"}), "no 'filter'")
    refuse(file_bytes(content, 1, lsh={"bands": 7}), "no 'lsh'")
    refuse(file_bytes(content, 1, content_length=True), "content_length")
    refuse(file_bytes(content, 1, version="2"), "version")
    refuse(file_bytes(record(4, 0, NEURAL), 1, allow={"entries": 1}), "needs 'model'")


def test_a_block_list_may_not_take_the_allow_name():
    m = {"format": 1, "source": "hl1", "list": "allow", "signal": "sha256", "version": 1, "created": 1,
         "expires": 2, "key_id": "k", "content_length": 16, "content_sha256": "00" * 32,
         "filter": {"type": "bloom", "m": 128, "k": 3, "salt": "11" * 16, "entries": 1}}
    refuse(listfile.serialise(listfile.encode_manifest(m), b"S" * 64, bytes(16)), "reserved")


def test_every_single_byte_truncation_is_refused():
    support.refuses_every_prefix(listfile.parse, file_bytes(), errors.ListFormatError)


def test_every_flipped_content_byte_is_refused_or_still_well_formed():
    # garbage in the content never crashes the parser: a clear refusal, or entries that pass every check
    data = file_bytes()
    content_start = len(data) - len(allowlist.encode_content(entries()))
    for i in range(content_start, len(data)):
        for x in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= x
            try:
                lf = listfile.parse(bytes(bad))
            except errors.ListFormatError:
                continue
            for e in lf.allow:
                e.check()
