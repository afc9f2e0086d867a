"""The golden list files (tests/data/golden*.gwl) read identically here: CPython on x86, Debian's
Python on emulated arm64/armhf (firmware/qemu/run-user.sh) and MicroPython (tests/micropython/test_core_port.py).

tests/data/golden.json, written with the files by tests/data/make_golden.py, says what every
platform must find: file digest, manifest, bit positions of sample keys, keys present and absent,
and the perceptual list's band keys.
"""

import hashlib

from tests.core import support

bloom = support.import_core("bloom")
listfile = support.import_core("listfile")
lsh = support.import_core("lsh")


def hexlify(b):
    return "".join("%02x" % x for x in bytes(b))


def unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def expectations():
    path = support.data_path("golden.json")
    if not support.exists(path):
        support.skip("tests/data/golden.json not present")
    return support.load_json(path)


def load(name):
    exp = expectations()["lists"][name]
    data = support.read_bytes(support.data_path(name))
    return exp, data, listfile.parse(data)


def filter_of(lf):
    f = lf.manifest["filter"]
    return bloom.Bloom(f["m"], f["k"], unhex(f["salt"]), lf.content)


def test_golden_file_bytes_and_digest():
    for name in ("golden.gwl", "golden-pdq.gwl"):
        exp, data, lf = load(name)
        assert len(data) == exp["bytes"], name
        assert hexlify(hashlib.sha256(data).digest()) == exp["sha256"], name
        assert lf.to_bytes() == data, name


def test_golden_manifest_and_content_digest():
    for name in ("golden.gwl", "golden-pdq.gwl"):
        exp, data, lf = load(name)
        assert lf.manifest == exp["manifest"], name
        assert len(lf.content) == lf.manifest["content_length"]
        assert hexlify(hashlib.sha256(bytes(lf.content)).digest()) == lf.manifest["content_sha256"]
        assert len(lf.signature) == 64


def test_golden_positions():
    exp, data, lf = load("golden.gwl")
    b = filter_of(lf)
    assert exp["positions"], "golden.json lists no positions"
    for key_hex, positions in exp["positions"].items():
        assert b.positions(unhex(key_hex)) == positions, key_hex


def test_golden_present_and_absent():
    exp, data, lf = load("golden.gwl")
    b = filter_of(lf)
    assert exp["present"] and exp["absent"]
    for key_hex in exp["present"]:
        assert unhex(key_hex) in b, key_hex
    for key_hex in exp["absent"]:
        assert unhex(key_hex) not in b, key_hex


def test_golden_exact_keys_are_digest_prefixes():
    # make_golden.py's entries are sha256(b"golden-entry-%d"); exact keys are the first 16 bytes.
    exp, data, lf = load("golden.gwl")
    b = filter_of(lf)
    for i in (0, 1, 2, 999):
        assert hashlib.sha256(b"golden-entry-%d" % i).digest()[:16] in b, i
    misses = 0
    for i in range(200):
        if hashlib.sha256(b"not-in-golden-%d" % i).digest()[:16] not in b:
            misses += 1
    assert misses >= 198, misses  # design rate 1e-4


def test_golden_pdq_band_keys():
    exp, data, lf = load("golden-pdq.gwl")
    bands = lf.manifest["lsh"]["bands"]
    b = filter_of(lf)
    for h_hex, keys in exp["band_keys"].items():
        assert [hexlify(k) for k in lsh.band_keys(unhex(h_hex), bands)] == keys
    for h_hex in exp["present_hashes"]:
        for k in lsh.band_keys(unhex(h_hex), bands):
            assert k in b, h_hex


def test_golden_signature_verifies():
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        support.skip("no Ed25519 here (MicroPython): devices without it rely on a verifying host")
    import base64

    exp = expectations()
    raw = base64.b64decode(exp["pubkey"].split()[1])
    pub = Ed25519PublicKey.from_public_bytes(raw)
    for name in ("golden.gwl", "golden-pdq.gwl"):
        _, data, lf = load(name)
        pub.verify(lf.signature, lf.signed_bytes())  # raises InvalidSignature on mismatch
        tampered = bytearray(lf.signed_bytes())
        tampered[-2] ^= 1
        try:
            pub.verify(lf.signature, bytes(tampered))
        except Exception as exc:  # cryptography.exceptions.InvalidSignature
            assert type(exc).__name__ == "InvalidSignature"
        else:
            raise AssertionError("a tampered manifest verified")
