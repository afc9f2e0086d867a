"""`gatewatch-hub allow build` and tools.allow.build_allow_list: the signed allow list, its versions,
what a device accepts and refuses, and every hostile input line (named, and nothing written).

Every hash is of a generated benign image or random bytes.
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from agent.core.allowlist import MAX_RADIUS
from agent.core.errors import ConfigError, TrustError
from agent.hashing import neural
from agent.lists.assemble import DEFAULT_NEURAL_MODEL
from agent.lists.store import ListStore, load_folder
from agent.lists.trust import TrustStore
from agent.lists.verify import verify_bytes
from tests.listkit import Hub
from tests.paths import ROOT
from tools.allow import build_allow_list

SHA = hashlib.sha256(b"benign false positive").hexdigest()
PDQ = hashlib.sha256(b"a pdq hash").hexdigest()
NEURAL = hashlib.md5(b"a neural code").hexdigest()


@pytest.fixture
def hub(tmp_path):
    return Hub(tmp_path / "hub", source="hl1")


def write(tmp_path, text, name="allow.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(p)


def good_input(tmp_path):
    return write(tmp_path, "# rejected by an analyst\nsha256,%s\n\npdq,%s,5\nneural,%s\n"
                           "entry,hl1/known,img 7.jpg\nentry,hl2/pdq,a,b\n" % (SHA, PDQ.upper(), NEURAL))


def test_built_signed_and_loaded_by_the_folder_rule(tmp_path, hub):
    out = str(tmp_path / "out")
    path = build_allow_list(good_input(tmp_path), out, "hl1", hub.key_path)
    assert os.path.basename(path) == "hl1+allow.v1.gwl"
    lst = load_folder(out, hub.trust()).lists["hl1/allow"]
    assert lst.signal == "allow" and lst.version == 1 and lst.entries == 5 and lst.bloom is None
    kinds = sorted((e.kind, e.radius) for e in lst.allow)
    assert kinds == [("entry", 0), ("entry", 0), ("neural", 4), ("pdq", 5), ("sha256", 0)]
    assert {(e.list, e.entry) for e in lst.allow if e.kind == "entry"} == {("hl1/known", "img 7.jpg"),
                                                                          ("hl2/pdq", "a,b")}
    assert lst.model == DEFAULT_NEURAL_MODEL == neural.DEFAULT_MODEL  # what the device's codes come from
    # versions roll forward like `lists build`, and a device holding v2 refuses v1 (rollback)
    v2 = build_allow_list(good_input(tmp_path), out, "hl1", hub.key_path)
    assert os.path.basename(v2) == "hl1+allow.v2.gwl"
    assert load_folder(out, hub.trust()).lists["hl1/allow"].version == 2
    with open(path, "rb") as f:
        with pytest.raises(TrustError, match="rollback"):
            verify_bytes(f.read(), hub.trust(), held_version=2)
    # installed like any list: the store keeps the newest version only
    store = ListStore(str(tmp_path / "state"), hub.trust())
    with open(v2, "rb") as f:
        data = f.read()
    store.install(verify_bytes(data, hub.trust()), data)
    assert list(store.load()) == ["hl1/allow"]


def test_tampered_and_other_key_refused(tmp_path, hub):
    path = build_allow_list(good_input(tmp_path), str(tmp_path / "out"), "hl1", hub.key_path)
    with open(path, "rb") as f:
        data = f.read()
    content = bytearray(data)
    content[-1] ^= 1  # the last entry's text: still well-formed, but not what was signed
    with pytest.raises(TrustError, match="digest"):
        verify_bytes(bytes(content), hub.trust())
    head = data.replace(b'"entries":5', b'"entries":4')
    with pytest.raises(TrustError):
        verify_bytes(head, hub.trust())
    other = Hub(tmp_path / "other", source="hl1", key_name="thief")
    forged = build_allow_list(good_input(tmp_path), str(tmp_path / "forged"), "hl1", other.key_path)
    with open(forged, "rb") as f:
        with pytest.raises(TrustError, match="does not verify"):
            verify_bytes(f.read(), hub.trust())
    # a source this device does not trust at all
    with open(forged, "rb") as f:
        with pytest.raises(TrustError, match="no trusted key"):
            verify_bytes(f.read(), TrustStore())


def test_an_empty_input_withdraws_every_entry(tmp_path, hub):
    path = build_allow_list(write(tmp_path, "# nothing allowed any more\n"), str(tmp_path / "o"), "hl1", hub.key_path)
    with open(path, "rb") as f:
        lst = verify_bytes(f.read(), hub.trust())
    assert lst.entries == 0 and lst.allow == []


@pytest.mark.parametrize("line,words", [
    ("pdq,%s,%d" % (PDQ, MAX_RADIUS["pdq"] + 1), "radius"),
    ("pdq,%s,99999999999999999999" % PDQ, "radius"),
    ("pdq,%s,-1" % PDQ, "radius"),
    ("pdq,%s,\u0663" % PDQ, "ASCII digits"),  # Arabic-Indic three: int() would take it
    ("pdq,%s,\uff13" % PDQ, "ASCII digits"),  # full-width three
    ("neural,%s,%d" % (NEURAL, MAX_RADIUS["neural"] + 1), "radius"),
    ("sha256,%s,3" % SHA, "no radius"),
    ("sha256,%s" % ("\u0661" * 64), "not a sha256 hash"),
    ("sha256,%s" % SHA[:-1], "64 hex digits"),
    ("md5,%s" % SHA, "32 hex digits"),
    ("pdq,%s,3,4" % PDQ, "too many fields"),
    ("pdq", "names no hash"),
    ("crc32,deadbeef", "not an allow entry"),
    (SHA, "not an allow entry"),
    ("entry,hl1known,x", "<source>/<list>"),
    ("entry,hl1/../x,x", "<source>/<list>"),
    ("entry,hl1/kn*own,x", "list name"),
    ("entry,hl1/known", "entry,<source>/<list>,<entry id>"),
    ("entry,hl1/known,bad\u0007id", "control"),
    ("entry,hl1/known," + "x" * 201, "at most 200"),
    ("pdq,%s,3\npdq,%s,4" % (PDQ, PDQ), "another radius"),
])
def test_hostile_lines_are_named_and_nothing_is_written(tmp_path, hub, line, words):
    text = "sha256,%s\n%s\n" % (SHA, line)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=words) as err:
        build_allow_list(write(tmp_path, text), str(out), "hl1", hub.key_path)
    assert "line 2" in str(err.value)
    assert not out.exists()


def test_bad_files_and_keys_are_refused(tmp_path, hub):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="line 2 is not UTF-8"):
        build_allow_list(write(tmp_path, b"sha256,%s\n\xff\xfe\n" % SHA.encode()), str(out), "hl1", hub.key_path)
    with pytest.raises(ConfigError, match="is a folder"):
        build_allow_list(str(tmp_path), str(out), "hl1", hub.key_path)
    with pytest.raises(ConfigError, match="signs for source 'hl1'"):
        build_allow_list(good_input(tmp_path), str(out), "hl2", hub.key_path)
    with pytest.raises(ConfigError, match="public key"):
        build_allow_list(good_input(tmp_path), str(out), "hl1", hub.pub_path)
    lines = "".join("sha256,%s\n" % hashlib.sha256(b"%d" % i).hexdigest() for i in range(10001))
    with pytest.raises(ConfigError, match="at most 10000"):
        build_allow_list(write(tmp_path, lines), str(out), "hl1", hub.key_path)
    assert not out.exists()
    with pytest.raises(ConfigError, match="reserved"):
        hub.build([], name="allow")


def test_cli(tmp_path, hub):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "tools.hub_cli", "allow", "build", "--source", "hl1", "--key", hub.key_path,
           "--input", good_input(tmp_path), "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"device_list": os.path.join(out, "hl1+allow.v1.gwl"), "version": 1, "entries": 5}
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "lists", "inspect", os.path.join(out, "hl1+allow.v1.gwl")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["stats"]["kinds"] == {"entry": 2, "neural": 1, "pdq": 1,
                                                                             "sha256": 1}, r.stderr
    bad = write(tmp_path, "pdq,%s,16\n" % PDQ, "bad.txt")
    r = subprocess.run(cmd[:-4] + ["--input", bad, "--out", out], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "bad.txt line 1" in r.stderr and "radius" in r.stderr
    assert sorted(os.listdir(out)) == ["hl1+allow.v1.gwl"]
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "lists", "build", "--source", "hl1", "--list", "allow",
                        "--signal", "sha256", "--input", bad, "--key", hub.key_path, "--out", out],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "reserved" in r.stderr


@pytest.mark.parametrize("field,value,words", [
    ("allow", {"entries": "1"}, "allow field 'entries'"),
    ("allow", {"entries": True}, "allow field 'entries'"),
    ("allow", {"entries": 1.0}, "allow field 'entries'"),
    ("allow", [1], "'allow' section"),
    ("filter", {"type": "bloom", "m": 128, "k": 3, "salt": "11" * 16, "entries": 1}, "no 'filter'"),
    ("list", "fp", "named 'allow'"),
    ("version", "3", "version"),
])
def test_a_validly_signed_allow_list_with_wrong_types_is_refused(hub, field, value, words):
    # a hub bug or a stolen key: the signature verifies, the fields still do not pass
    from agent.core import listfile
    from agent.core.allowlist import AllowEntry, encode_content
    from agent.lists.trust import key_id
    content = encode_content([AllowEntry("sha256", hash=bytes(32))])
    m = {"format": 1, "source": "hl1", "list": "allow", "signal": "allow", "version": 3, "created": 1,
         "expires": 4000000000, "key_id": key_id(hub.key.public_key()), "content_length": len(content),
         "content_sha256": hashlib.sha256(content).hexdigest(), "allow": {"entries": 1}, field: value}
    raw = listfile.encode_manifest(m)
    data = listfile.serialise(raw, hub.key.sign(listfile.signed_part(raw)), content)
    with pytest.raises(TrustError, match="malformed.*" + words.replace("(", r"\(").replace(")", r"\)")):
        verify_bytes(data, hub.trust())
