"""Signed list files: building, the acceptance rules, the golden file, hash-file inputs."""

import hashlib
import json
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import listfile
from agent.core.errors import ListFormatError
from agent.core.errors import ConfigError, TrustError
from agent.confirm.wire import Entry, EntryIndex
from agent.lists.store import load_folder
from agent.lists.trust import TrustStore
from agent.lists.verify import load_list_file, verify_bytes
from agent.confirm.sealed import EXACT_BAND
from tools.build import build_list, generate_keys, load_private_key, read_hash_text
from tests import paths

DATA = str(paths.DATA)


def entries(n, tag=b"e"):
    return [Entry("id%d" % i, hashlib.sha256(tag + b"%d" % i).digest()) for i in range(n)]


@pytest.fixture
def signed(tmp_path):
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("hotline", key.public_key())
    path, hub, manifest = build_list(source="hotline", name="known", signal="sha256", entries=entries(100),
                                     key=key, out_dir=str(tmp_path))
    return key, trust, path, hub


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_built_list_verifies_and_finds_its_entries(signed):
    _, trust, path, _ = signed
    loaded = load_list_file(path, trust)
    assert loaded.version == 1 and loaded.signal == "sha256"
    for e in entries(100):
        assert e.hash[:16] in loaded.bloom
    assert sum(e.hash[:16] in loaded.bloom for e in entries(1000, b"other")) <= 1


@pytest.mark.parametrize("offset", [0, 5, 40, -1, -200])
def test_one_flipped_byte_is_refused(signed, offset):
    _, trust, path, _ = signed
    data = bytearray(read(path))
    data[offset] ^= 0x01
    with pytest.raises(TrustError):
        verify_bytes(bytes(data), trust)


def test_signed_by_another_key_is_refused(signed, tmp_path):
    _, trust, _, _ = signed
    other = Ed25519PrivateKey.generate()
    path, _, _ = build_list(source="hotline", name="known", signal="sha256", entries=entries(10), key=other,
                            out_dir=str(tmp_path / "other"))
    with pytest.raises(TrustError, match="signature does not verify"):
        load_list_file(path, trust)


def test_unknown_source_is_refused(signed, tmp_path):
    key, trust, _, _ = signed
    path, _, _ = build_list(source="elsewhere", name="known", signal="sha256", entries=entries(10), key=key,
                            out_dir=str(tmp_path / "x"))
    with pytest.raises(TrustError, match="no trusted key"):
        load_list_file(path, trust)


def test_expired_list_is_refused(signed, tmp_path):
    key, trust, _, _ = signed
    path, _, _ = build_list(source="hotline", name="old", signal="sha256", entries=entries(10), key=key,
                            out_dir=str(tmp_path / "old"), now=time.time() - 10 * 86400, expires_days=1)
    with pytest.raises(TrustError, match="expired"):
        load_list_file(path, trust)


def test_over_size_cap_is_refused(signed):
    _, trust, path, _ = signed
    with pytest.raises(TrustError, match="size cap"):
        load_list_file(path, trust, max_bytes=100)


def test_rollback_and_replay_are_refused(signed):
    _, trust, path, _ = signed
    data = read(path)
    with pytest.raises(TrustError, match="not newer"):
        verify_bytes(data, trust, held_version=1)
    assert verify_bytes(data, trust, held_version=0).version == 1


def test_truncated_and_trailing_bytes_are_refused(signed):
    _, trust, path, _ = signed
    data = read(path)
    for bad in (data[:-1], data + b"\x00", data[:20], b"", b"GWL0" + data[4:]):
        with pytest.raises(TrustError):
            verify_bytes(bad, trust)


def test_new_version_keeps_filter_parameters_so_deltas_stay_small(tmp_path):
    key = Ed25519PrivateKey.generate()
    _, _, m1 = build_list(source="s", name="l", signal="sha256", entries=entries(100), key=key,
                          out_dir=str(tmp_path), capacity=200)
    _, _, m2 = build_list(source="s", name="l", signal="sha256", entries=entries(150), key=key,
                          out_dir=str(tmp_path))
    assert m2["version"] == 2
    assert m1["filter"]["salt"] == m2["filter"]["salt"] and m1["filter"]["m"] == m2["filter"]["m"]
    with pytest.raises(ConfigError, match="not newer"):
        build_list(source="s", name="l", signal="sha256", entries=entries(5), key=key, out_dir=str(tmp_path),
                   version=2)
    _, _, m3 = build_list(source="s", name="l", signal="sha256", entries=entries(500), key=key,
                          out_dir=str(tmp_path))
    assert m3["filter"]["salt"] != m1["filter"]["salt"], "over capacity: fresh parameters"


def test_load_folder_keeps_newest_version(tmp_path):
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("s", key.public_key())
    for n in (10, 20, 30):
        build_list(source="s", name="l", signal="sha256", entries=entries(n), key=key, out_dir=str(tmp_path))
    lists = list(load_folder(str(tmp_path), trust).lists.values())
    assert [(x.ident, x.version) for x in lists] == [("s/l", 3)]


def test_key_files(tmp_path):
    priv, pub = generate_keys(str(tmp_path), "hotline", "hotline")
    assert oct(os.stat(priv).st_mode & 0o777) == "0o600"
    load_private_key(priv)
    store = TrustStore.from_specs([pub])
    assert store.sources() == ["hotline"]
    assert TrustStore.from_specs(["other=%s" % pub]).sources() == ["other"]
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(str(tmp_path), "hotline", "hotline")
    bad = tmp_path / "bad.pub"
    bad.write_text("ssh-ed25519 AAAA x\n")
    with pytest.raises(ConfigError, match="not a gatewatch public key"):
        TrustStore.from_specs([str(bad)])


def test_hash_text_formats(tmp_path):
    h = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3)]
    plain = tmp_path / "plain.txt"
    plain.write_text("# comment\n" + "\n".join(h) + "\n")
    assert [e.hash.hex() for e in read_hash_text(str(plain), "sha256")] == h
    csvf = tmp_path / "list.csv"
    csvf.write_text("id,type,hash\na,sha256,%s\nb,md5,%s\nc,sha256,%s\n" % (h[0], "0" * 32, h[1]))
    got = read_hash_text(str(csvf), "sha256")
    assert [(e.id, e.hash.hex()) for e in got] == [("a", h[0]), ("c", h[1])]
    te = tmp_path / "te.txt"
    te.write_text("pdq,%s\npdq,%s\n" % (h[0], h[2]))
    assert len(read_hash_text(str(te), "pdq")) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("nothex\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_hash_text(str(bad), "sha256")


def test_hub_entries_lookup_by_probe(signed):
    _, _, _, hub = signed
    h = EntryIndex.load(hub)
    e = entries(100)[7]
    assert [x.id for x in h.lookup((EXACT_BAND, e.hash))] == ["id7"]
    assert h.lookup((EXACT_BAND, e.hash[:31] + b"\0")) == [] and h.lookup((EXACT_BAND, bytes(32))) == []


def test_golden_file_reads_identically():
    """The checked-in golden file must parse and answer as recorded (also read on ARM and MicroPython)."""
    with open(os.path.join(DATA, "golden.json")) as f:
        golden = json.load(f)
    trust = TrustStore.from_specs([os.path.join(DATA, "golden.pub")])
    info = golden["lists"]["golden.gwl"]
    data = read(os.path.join(DATA, "golden.gwl"))
    assert hashlib.sha256(data).hexdigest() == info["sha256"]
    loaded = verify_bytes(data, trust)
    assert loaded.manifest == info["manifest"]
    for k in info["present"]:
        assert bytes.fromhex(k) in loaded.bloom
    for k in info["absent"]:
        assert bytes.fromhex(k) not in loaded.bloom
    for k, pos in info["positions"].items():
        assert loaded.bloom.positions(bytes.fromhex(k)) == pos
    pdq = verify_bytes(read(os.path.join(DATA, "golden-pdq.gwl")), trust)
    assert pdq.lsh["bands"] == golden["lists"]["golden-pdq.gwl"]["manifest"]["lsh"]["bands"]


def test_manifest_checks():
    with pytest.raises(ListFormatError, match="lacks field"):
        listfile.check_manifest({"format": 1})
    good = listfile.parse(read(os.path.join(DATA, "golden.gwl"))).manifest
    for field, value in (("format", 9), ("signal", "crc32"), ("version", -1), ("content_length", 1)):
        bad = dict(good)
        bad[field] = value
        with pytest.raises(ListFormatError):
            listfile.check_manifest(bad)
