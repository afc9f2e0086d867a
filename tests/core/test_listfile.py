"""List file container (.gwl) of the core: round trip and every malformation the parser refuses.

Built in the test from known parts (the signature is 64 placeholder bytes: verifying it is the
full agent's job, not the core's). Runs unchanged under CPython and MicroPython.
"""

import struct

from tests.core import support

listfile = support.import_core("listfile")
errors = support.import_core("errors")


def manifest(**over):
    m = {
        "format": 1, "source": "demo-hotline", "list": "benign", "signal": "sha256", "version": 3,
        "created": 1700000000, "expires": 1900000000, "key_id": "k1", "content_length": 16,
        "content_sha256": "00" * 32,
        "filter": {"type": "bloom", "m": 128, "k": 3, "salt": "11" * 16, "entries": 2},
    }
    return support.overridden(m, over)


def file_bytes(man=None, signature=b"S" * 64, content=None, raw_manifest=None):
    if raw_manifest is None:
        raw_manifest = listfile.encode_manifest(man or manifest())
    if content is None:
        content = bytes(range(16))
    return listfile.serialise(raw_manifest, signature, content)


def refuse(data, words, **kw):
    exc = support.raises(errors.ListFormatError, listfile.parse, data, **kw)
    assert words in str(exc), "%r not in %r" % (words, str(exc))


def test_layout_is_little_endian_and_documented():
    raw = listfile.encode_manifest(manifest())
    data = file_bytes()
    assert data[:4] == b"GWL1"
    assert struct.unpack("<I", data[4:8])[0] == len(raw)
    assert data[8:8 + len(raw)] == raw
    assert struct.unpack("<H", data[8 + len(raw):10 + len(raw)])[0] == 64
    assert data[10 + len(raw) + 64:] == bytes(range(16))


def test_manifest_encoding_is_canonical():
    raw = listfile.encode_manifest({"b": 1, "a": [1, 2], "c": "x"})
    assert raw == b'{"a":[1,2],"b":1,"c":"x"}'


def test_round_trip():
    data = file_bytes()
    lf = listfile.parse(data)
    assert lf.manifest["source"] == "demo-hotline"
    assert lf.manifest["filter"]["m"] == 128
    assert lf.signature == b"S" * 64
    assert bytes(lf.content) == bytes(range(16))
    assert lf.to_bytes() == data
    assert lf.signed_bytes() == data[:8 + len(lf.manifest_bytes)]


def test_parse_accepts_bytearray_and_cap():
    data = file_bytes()
    assert listfile.parse(bytearray(data)).manifest["version"] == 3
    assert listfile.parse(data, max_bytes=len(data)).manifest["version"] == 3


def test_refuses_bad_magic_and_tiny_input():
    refuse(b"", "bad magic")
    refuse(b"GWL1", "bad magic")
    refuse(b"XXXX" + file_bytes()[4:], "bad magic")


def test_refuses_over_cap():
    data = file_bytes()
    refuse(data, "cap", max_bytes=len(data) - 1)


def test_refuses_truncation_everywhere():
    data = file_bytes()
    h = struct.unpack("<I", data[4:8])[0]
    refuse(data[:8 + h - 5], "truncated in the manifest")
    refuse(data[:10 + h + 10], "truncated in the signature")
    refuse(data[:-1], "truncated")
    refuse(data + b"\x00", "trailing")


def test_refuses_bad_manifest_json():
    refuse(file_bytes(raw_manifest=b"{not json"), "not valid JSON")
    refuse(file_bytes(raw_manifest=b"[1,2]"), "not a JSON object")


def test_refuses_missing_fields():
    for name in listfile.REQUIRED:
        refuse(file_bytes(manifest(**{name: None})), "'%s'" % name)
    for name in listfile.FILTER_REQUIRED + listfile.FILTER_TYPES["bloom"]:
        f = manifest()["filter"]
        del f[name]
        refuse(file_bytes(manifest(filter=f)), "'%s'" % name)
    for name in listfile.FILTER_REQUIRED + listfile.FILTER_TYPES["fuse16"]:
        f = FUSE_FILTER.copy()
        del f[name]
        refuse(file_bytes(manifest(filter=f, content_length=96), content=bytes(96)), "'%s'" % name)


def test_refuses_bad_values():
    refuse(file_bytes(manifest(format=2)), "not supported")
    refuse(file_bytes(manifest(signal="crc32")), "unknown signal")
    refuse(file_bytes(manifest(version=-1)), "whole number")
    refuse(file_bytes(manifest(expires="soon")), "whole number")
    refuse(file_bytes(manifest(filter="bloom")), "not an object")
    f = manifest()["filter"]
    f["type"] = "cuckoo"
    refuse(file_bytes(manifest(filter=f)), "not supported")
    refuse(file_bytes(manifest(content_length=17), content=bytes(17)), "does not fit")


def test_refuses_wrong_types_and_ranges_in_the_filter_and_lsh():
    # A signed list is still checked: these made verification raise TypeError, or one scan grow
    # past 2 GB, before the fields were checked.
    for name, value in (("k", "20"), ("k", 0), ("k", 65), ("k", True), ("m", "128"), ("m", 1.5),
                        ("salt", 17), ("salt", "zz" * 16), ("entries", -1), ("capacity", "9"),
                        ("fp_rate", 2), ("keys_per_entry", 1000)):
        f = manifest()["filter"]
        f[name] = value
        refuse(file_bytes(manifest(filter=f)), "filter field '%s'" % name)
    refuse(file_bytes(manifest(source="hl/../x")), "source")
    refuse(file_bytes(manifest(source=7)), "source")
    refuse(file_bytes(manifest(list="")), "list")
    refuse(file_bytes(manifest(content_sha256="00")), "content_sha256")
    refuse(file_bytes(manifest(version=True)), "version")
    good = {"bands": 7, "flip_bits": 6, "depth": 2, "threshold": 31}
    assert listfile.parse(file_bytes(manifest(signal="pdq", lsh=good))).manifest["lsh"] == good
    refuse(file_bytes(manifest(signal="pdq")), "lsh")
    for over, words in ((dict(flip_bits=36, depth=36), "lsh field"), (dict(flip_bits=6, depth=36), "depth"),
                        (dict(flip_bits=36, depth=3), "flip_bits"), (dict(bands=32, flip_bits=9), "flip_bits"),
                        (dict(bands="7"), "bands"), (dict(threshold=-1), "threshold"),
                        (dict(depth=3, flip_bits=30), "probes")):
        lsh = dict(good)
        lsh.update(over)
        refuse(file_bytes(manifest(signal="pdq", lsh=lsh)), words)
    lsh = dict(good)
    del lsh["bands"]
    refuse(file_bytes(manifest(signal="pdq", lsh=lsh)), "bands")


FUSE_FILTER = {"type": "fuse16", "salt": "22" * 16, "entries": 20, "segment_length": 16, "segment_count": 1,
               "array_length": 48}


def test_fuse_filters_are_read_and_checked():
    m = listfile.parse(file_bytes(manifest(filter=FUSE_FILTER, content_length=96), content=bytes(96))).manifest
    assert m["filter"] == FUSE_FILTER
    for over, words in ((dict(segment_length=12, array_length=42), "power of two"),
                        (dict(segment_length=2, array_length=6), "power of two"),
                        (dict(array_length=64), "array_length"),
                        (dict(segment_count=0), "segment_count"),
                        (dict(segment_count="1"), "segment_count"),
                        (dict(segment_length=True), "segment_length"),
                        (dict(array_length=-48), "array_length"),
                        (dict(segment_length=1 << 18, segment_count=1 << 20, array_length=((1 << 20) + 2) << 18),
                         "array_length"),
                        (dict(keys=-1), "keys"),
                        (dict(type=["fuse16"]), "not supported")):
        f = dict(FUSE_FILTER)
        f.update(over)
        refuse(file_bytes(manifest(filter=f, content_length=96), content=bytes(96)), words)
    refuse(file_bytes(manifest(filter=FUSE_FILTER, content_length=97), content=bytes(97)), "content length")
    # min_bands, the perceptual candidate rule, is within 1..bands
    good = {"bands": 7, "flip_bits": 6, "depth": 2, "threshold": 31, "min_bands": 2}
    assert listfile.parse(file_bytes(manifest(signal="pdq", lsh=good))).manifest["lsh"]["min_bands"] == 2
    for value, words in ((8, "exceeds"), (0, "min_bands"), ("2", "min_bands"), (True, "min_bands")):
        lsh = dict(good, min_bands=value)
        refuse(file_bytes(manifest(signal="pdq", lsh=lsh)), words)


def test_every_single_byte_truncation_is_refused():
    # A device may receive any prefix after a power cut: each must be refused, none may crash.
    support.refuses_every_prefix(listfile.parse, file_bytes(), errors.ListFormatError)


def test_canonical_fallback_matches_json():
    # The hand-built encoder MicroPython uses must give CPython's sort_keys bytes exactly.
    m = manifest()
    m["nested"] = {"z": [1, {"b": None, "a": True}], "a": "text"}
    assert listfile._canonical(m).encode("utf-8") == listfile.encode_manifest(m)
    assert listfile._canonical(m) == \
        '{"content_length":16,"content_sha256":"%s","created":1700000000,"expires":1900000000,' \
        '"filter":{"entries":2,"k":3,"m":128,"salt":"%s","type":"bloom"},"format":1,"key_id":"k1",' \
        '"list":"benign","nested":{"a":"text","z":[1,{"a":true,"b":null}]},"signal":"sha256",' \
        '"source":"demo-hotline","version":3}' % ("00" * 32, "11" * 16)
