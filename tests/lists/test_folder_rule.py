"""One folder rule for every part: good lists load, each refused list is named with why.

A folder holds one good list, one list signed by a key nobody trusts, another source's expired list
and a file that is not a list at all. The loader, the daemon and the standalone ICAP service all
block with the good list and say what they refused; with no good list, a standalone service refuses
to start instead of serving with nothing to match. Images are generated, never real material.
"""

import logging
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.confirm.wire import Entry
from agent.config import defaults
from agent.daemon import Agent
from agent.hashing.imaging import digests
from agent.hashing.samples import encode, generate_image
from agent.lists.store import ListStore, list_file_name, load_folder, parse_file_name
from agent.lists.trust import TrustStore
from agent.lists.verify import load_list_file
from tests.intake.icap.realservers import AgentProcess
from tests.intake.icap.support import connect, read_icap_response, respmod
from tools.build import build_list

LISTED = encode(generate_image(4242, (96, 72)), "PNG")
OTHER = encode(generate_image(4243, (96, 72)), "PNG")


@pytest.fixture
def mixed(tmp_path):
    """(folder, trusted pub key path): good list + untrusted-key list + expired list + junk."""
    from tools.build import generate_keys, load_private_key
    keys = tmp_path / "keys"
    _priv, pub = generate_keys(str(keys), "hl", "hl")
    good_key = load_private_key(_priv)
    folder = tmp_path / "lists"
    entry = [Entry("listed", digests(LISTED)[0])]
    build_list(source="hl", name="known", signal="sha256", entries=entry, key=good_key, out_dir=str(folder))
    # same source name, a key the device does not trust
    build_list(source="hl", name="rogue", signal="sha256", entries=[Entry("o", digests(OTHER)[0])],
               key=Ed25519PrivateKey.generate(), out_dir=str(folder))
    # another source, expired (signed a day and a half ago for one day)
    other = Ed25519PrivateKey.generate()
    build_list(source="other", name="old", signal="sha256", entries=entry, key=other, out_dir=str(folder),
               expires_days=1, now=time.time() - 1.5 * 86400)
    (folder / "junk.gwl").write_bytes(b"not a list")
    return str(folder), pub


def test_loader_keeps_the_good_list_and_names_each_refusal(mixed):
    folder, pub = mixed
    result = load_folder(folder, TrustStore.from_specs([pub]))
    assert list(result.lists) == ["hl/known"]
    reasons = {r.file: r.reason for r in result.refused}
    assert set(reasons) == {"hl+rogue.v1.gwl", "other+old.v1.gwl", "junk.gwl"}
    assert "signature does not verify" in reasons["hl+rogue.v1.gwl"]
    assert "no trusted key" in reasons["other+old.v1.gwl"]
    assert "malformed" in reasons["junk.gwl"]


def test_daemon_blocks_with_the_good_list_and_shows_the_refusals(mixed, tmp_path, caplog):
    folder, pub = mixed
    conf = defaults()
    conf["agent"].update(state_dir=str(tmp_path / "state"), hal="emulated", status_interval=3600)
    conf["lists"].update(dir=folder, trust=[pub])
    conf["localapi"]["enabled"] = False
    with caplog.at_level(logging.WARNING):
        agent = Agent(conf).start()
    try:
        assert agent.inspector.inspect(LISTED, "image/png", "http://cdn.example/a.png").action == "block"
        assert agent.inspector.inspect(OTHER, "image/png", "http://cdn.example/b.png").action == "allow"
        refused = {r["file"] for r in agent.status()["lists_refused"]}
        assert refused == {"hl+rogue.v1.gwl", "other+old.v1.gwl", "junk.gwl"}
    finally:
        agent.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "hl+rogue.v1.gwl" in logged and "junk.gwl" in logged


def _icap_verdict(port, body):
    first, rest = respmod(body, ctype="image/png")
    s = connect(port)
    try:
        s.sendall(first + rest)
        status, _fields, _heads, reply = read_icap_response(s)
    finally:
        s.close()
    return status, reply


def test_standalone_icap_blocks_with_the_good_list_and_logs_the_refusals(mixed):
    folder, pub = mixed
    agent = AgentProcess("agent.intake.icap", folder, pub, "--reload", "0")
    try:
        status, reply = _icap_verdict(agent.port, LISTED)
        assert status == 200 and reply != LISTED  # the replacement, not the image
        assert _icap_verdict(agent.port, OTHER)[0] == 204
    finally:
        agent.stop()
    err = agent.proc.stderr.read().decode()
    assert "hl+rogue.v1.gwl" in err and "other+old.v1.gwl" in err and "junk.gwl" in err


@pytest.mark.parametrize("module", ["agent.intake.icap", "agent.intake.proxy"])
def test_standalone_refuses_to_start_with_no_good_list(module, mixed, tmp_path):
    import subprocess
    import sys
    folder, _pub = mixed
    from tools.build import generate_keys
    _p, stranger = generate_keys(str(tmp_path / "k2"), "x", "x")
    r = subprocess.run([sys.executable, "-m", module, "--listen", "127.0.0.1:0", "--lists", folder,
                        "--trust", stranger], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no list in" in r.stderr and "hl+known.v1.gwl" in r.stderr and "no trusted key" in r.stderr


def test_names_of_lists_never_collide(tmp_path):
    # 'hl' + 'a.b' and 'hl.a' + 'b' once shared hl.a.b.v1.gwl: installing one deleted the other
    assert list_file_name("hl", "a.b", 1) != list_file_name("hl.a", "b", 1)
    assert parse_file_name(list_file_name("hl", "a.b", 7)) == ("hl", "a.b", 7)
    assert parse_file_name(list_file_name("hl.a", "b", 7)) == ("hl.a", "b", 7)
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    for src in ("hl", "hl.a"):
        trust.add(src, key.public_key())
    out = tmp_path / "hub"
    a, _, _ = build_list(source="hl", name="a.b", signal="sha256", entries=[Entry("1", b"\x01" * 32)], key=key,
                         out_dir=str(out))
    b, _, _ = build_list(source="hl.a", name="b", signal="sha256", entries=[Entry("2", b"\x02" * 32)], key=key,
                         out_dir=str(out))
    assert a != b and os.path.exists(a) and os.path.exists(b)
    store = ListStore(str(tmp_path / "dev"), trust)
    for path in (a, b):
        store.install(load_list_file(path, trust), open(path, "rb").read())
    assert sorted(store.load()) == ["hl.a/b", "hl/a.b"]


def test_a_list_copied_in_under_another_name_is_replaced_by_its_next_version(tmp_path):
    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("hl", key.public_key())
    out = str(tmp_path / "hub")
    v1, _, _ = build_list(source="hl", name="l", signal="sha256", entries=[Entry("1", b"\x01" * 32)], key=key,
                          out_dir=out)
    v2, _, _ = build_list(source="hl", name="l", signal="sha256", entries=[Entry("2", b"\x02" * 32)], key=key,
                          out_dir=out)
    store = ListStore(str(tmp_path / "dev"), trust)
    with open(os.path.join(store.directory, "copied.gwl"), "wb") as f:
        f.write(open(v1, "rb").read())
    store.install(load_list_file(v2, trust), open(v2, "rb").read())
    assert os.listdir(store.directory) == ["hl+l.v2.gwl"]


def test_standalone_proxy_blocks_with_the_good_list_and_logs_the_refusals(mixed, tmp_path):
    import urllib.request
    from tests.intake.icap.realservers import Origin
    folder, pub = mixed
    www = tmp_path / "www"
    www.mkdir()
    (www / "listed.png").write_bytes(LISTED)
    (www / "other.png").write_bytes(OTHER)
    origin = Origin(str(www))
    agent = AgentProcess("agent.intake.proxy", folder, pub, "--reload", "0", "--allow-loopback-upstream")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % agent.port}))

    def fetch(name):
        try:
            with opener.open(origin.url(name), timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
    try:
        status, body = fetch("listed.png")
        assert body != LISTED and (status == 403 or body.startswith(b"\x89PNG"))  # 403 or the placeholder
        assert fetch("other.png") == (200, OTHER)
    finally:
        agent.stop()
        origin.stop()
    err = agent.proc.stderr.read().decode()
    assert "hl+rogue.v1.gwl" in err and "other+old.v1.gwl" in err and "junk.gwl" in err
