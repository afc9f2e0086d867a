"""The hub's log (tools.translog) and `gatewatch-hub log`: appending, building into the log, and the
audit `log verify`, which names the first bad point of a rewritten, forked or damaged log."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from agent.core import merkle
from agent.core.errors import ConfigError
from agent.lists import translog as device
from tests.listkit import Hub, random_entries
from tools.hub_cli import main as hub_cli
from tools.translog import LogStore, MerkleTree, audit


def _write_lines(path, lines):
    with open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def _signed_head(hub, size, root, issued=1):
    doc = {"type": device.HEAD_TYPE, "format": 1, "log": "hub", "size": size, "root": root.hex(),
           "issued": issued, "key_id": hub.log.key_id}
    signed = device.encode_signed(doc)
    return device.head_wire(signed, hub.log_key.sign(device.head_message(signed)))


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path / "hub", log=True)
    h.v = [None] + [h.build(random_entries(100, 1) + random_entries(5 * i, 2 + i)) for i in range(3)]
    return h


def _verify(capsys, *args):
    rc = hub_cli(["log", "verify"] + list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_genuine_log_verifies_with_its_lists_and_a_devices_heads(hub, tmp_path, capsys):
    # a device that followed the log keeps its heads in log-heads.json: the auditor checks them too
    v = device.LogVerifier(hub.trust(), device.LogState(str(tmp_path / "log-heads.json")))
    for line in hub.log.steps():
        v.offer_step(line)
    rc, out, err = _verify(capsys, hub.log.folder, "--key", hub.log_pub_path, "--lists", hub.out,
                           "--known-head", str(tmp_path / "log-heads.json"))
    assert rc == 0, err
    summary = json.loads(out)
    assert (summary["leaves"], summary["heads"], summary["size"], summary["lists_checked"],
            summary["known_heads_checked"]) == (3, 3, 3, 3, 1)
    assert summary["root"] == MerkleTree.of_leaves(hub.log.leaves()).root().hex()


def test_a_changed_earlier_leaf_is_named(hub, capsys):
    leaves = os.path.join(hub.log.folder, "leaves")
    lines = open(leaves, "rb").read().splitlines()
    s, n, sig, ver, digest = merkle.parse_leaf(bytes.fromhex(lines[1].decode()))
    lines[1] = merkle.leaf_bytes(s, n, sig, ver, bytes(32)).hex().encode()  # leaf 1: another list file
    _write_lines(leaves, lines)
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1
    assert "head 1 (size 2): its root does not match the leaves: a leaf below index 2 was changed" in err, err
    assert "heads up to size 1 still match" in err


def test_a_fork_and_a_smaller_head_after_a_bigger_one_are_named(hub, tmp_path, capsys):
    heads = os.path.join(hub.log.folder, "heads")
    good = open(heads, "rb").read().splitlines()
    last = device.parse_step(good[-1])["head"]
    # the log's key signs a second head of size 3 with another root
    fork = device.step_bytes(last, _signed_head(hub, 3, bytes(32)), 3, [])
    _write_lines(heads, good + [fork])
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1 and "head 3 (size 3): a fork: head 2 has the same size with another root" in err, err
    # a smaller head after the bigger one
    tree = MerkleTree.of_leaves(hub.log.leaves())
    smaller = device.step_bytes(last, _signed_head(hub, 2, tree.root(2)), 3, [])
    _write_lines(heads, good + [smaller])
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1 and "head 3 (size 2) is smaller than head 2 (size 3)" in err, err
    # a step that does not start from the head before it
    first = device.parse_step(good[0])["head"]
    skip = device.step_bytes(first, _signed_head(hub, 3, tree.root(3)), 1, tree.consistency(1, 3))
    _write_lines(heads, good[:2] + [skip])
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1 and "head 2 (size 3): its step does not start from head 1" in err, err
    # a head signed by another key (a list key) is not the log's
    doc = json.loads(good[2])
    doc["head"]["signature"] = json.loads(device.step_bytes(None, device.head_wire(
        doc["head"]["signed"].encode(), hub.key.sign(device.head_message(doc["head"]["signed"].encode()))), 0, []))[
        "head"]["signature"]
    _write_lines(heads, good[:2] + [json.dumps(doc).encode()])
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1 and "head 2: " in err and "signature does not verify" in err, err


def test_a_rewritten_history_that_is_consistent_in_itself_is_caught_by_a_head_seen_before(hub, tmp_path, capsys):
    """A hub that rewrites leaves AND re-signs every head passes the internal checks; a head a device
    (or an earlier audit) kept shows the rewrite."""
    kept = tmp_path / "seen.json"
    kept.write_bytes(json.dumps(device.parse_step(hub.log.steps()[1])["head"]).encode())
    with open(hub.log_pub_path, "r", encoding="utf-8") as f:
        rewritten = LogStore.create(str(tmp_path / "rewritten"), "hub", f.read())
    other = hub.build(random_entries(100, 77), version=1, out=str(tmp_path / "other"), logged=False)
    for p in (other, hub.v[2], hub.v[3]):
        rewritten.append([p], hub.log_key)
    rc, _out, err = _verify(capsys, rewritten.folder)
    assert rc == 0, err
    rc, _out, err = _verify(capsys, rewritten.folder, "--known-head", str(kept))
    assert rc == 1 and "known head of size 2" in err and "does not match the log" in err, err


def test_damaged_leaves_and_duplicate_versions_are_named(hub, tmp_path, capsys):
    leaves = os.path.join(hub.log.folder, "leaves")
    lines = open(leaves, "rb").read().splitlines()
    for bad, reason in ((b"zz", "leaf 1: not a list-version leaf"),
                        ("\u0661".encode() * 8, "leaf 1: not a list-version leaf"),
                        (lines[0], "leaf 1 repeats leaf 0")):
        _write_lines(leaves, [lines[0], bad] + lines[2:])
        rc, _out, err = _verify(capsys, hub.log.folder)
        assert rc == 1 and reason in err, err
    s, n, sig, ver, _d = merkle.parse_leaf(bytes.fromhex(lines[0].decode()))
    twin = merkle.leaf_bytes(s, n, sig, ver, bytes(32)).hex().encode()
    _write_lines(leaves, lines + [twin])
    rc, _out, err = _verify(capsys, hub.log.folder)
    assert rc == 1 and "leaf 3: hl1/sha v1 is already leaf 0 with another list file" in err, err
    # the trusted key is not the log's: the audit says so before anything else
    other = Hub(tmp_path / "other", log=True)
    _write_lines(leaves, lines)
    rc, _out, err = _verify(capsys, hub.log.folder, "--key", other.log_pub_path)
    assert rc == 1 and "someone replaced the log's key" in err, err
    # a list that is not in the log
    stray = hub.build(random_entries(10, 55), version=7, out=str(tmp_path / "stray"), logged=False)
    rc, _out, err = _verify(capsys, hub.log.folder, "--lists", os.path.dirname(stray))
    assert rc == 1 and "hl1+sha.v7.gwl: hl1/sha v7 is not in the log" in err, err


def test_append_refusals(hub, tmp_path):
    log = LogStore(hub.log.folder)
    # the same file again keeps its place and signs nothing new
    assert log.append([hub.v[2]], hub.log_key) == ([1], None)
    with pytest.raises(ConfigError, match="not the key of log hub"):
        log.append([hub.v[2]], hub.key)  # a list key never signs heads
    twin = hub.build(random_entries(3, 66), version=2, out=str(tmp_path / "twin"), logged=False)
    with pytest.raises(ConfigError, match="already leaf 1 of log hub with another list file"):
        log.append([twin], hub.log_key)
    foreign = Hub(tmp_path / "foreign", source="hl2").build(random_entries(3, 67))
    with pytest.raises(ConfigError, match="of source 'hl2', which log hub does not hold"):
        log.append([foreign], hub.log_key)
    assert len(log.leaves()) == 3 and len(log.steps()) == 3  # nothing changed
    with pytest.raises(ConfigError, match="already holds a log"):
        LogStore.create(hub.log.folder, "hub", open(hub.log_pub_path).read())


def test_cli_init_build_append_show_proof(tmp_path, capsys):
    keys, log, out = str(tmp_path / "keys"), str(tmp_path / "log"), str(tmp_path / "lists")
    assert hub_cli(["keys", "generate", "--out", keys, "--source", "hl1"]) == 0
    assert hub_cli(["log", "init", "--log", log, "--keys-out", keys, "--source", "hl1"]) == 0
    assert open(os.path.join(keys, "hub-log.pub")).read().startswith("gatewatch-log-ed25519 ")
    hashes = tmp_path / "h.txt"
    hashes.write_text("".join("%064x\n" % i for i in range(1, 20)))
    capsys.readouterr()
    build = ["lists", "build", "--source", "hl1", "--list", "sha", "--signal", "sha256", "--input", str(hashes),
             "--key", os.path.join(keys, "hl1.key"), "--out", out]
    assert hub_cli(build + ["--log", log]) == 2  # --log needs --log-key
    assert "go together" in capsys.readouterr().err
    assert hub_cli(build + ["--log", log, "--log-key", os.path.join(keys, "hl1.key")]) == 2
    assert "is not the key of log hub" in capsys.readouterr().err
    assert hub_cli(build + ["--log", log, "--log-key", os.path.join(keys, "hub-log.key")]) == 0
    assert json.loads(capsys.readouterr().out)["log"] == {"log": "hub", "index": 0}
    assert sorted(os.listdir(out)) == ["hl1+sha.v1.gwl", "hl1+sha.v1.proof", "hub", "hub.heads"]
    # a version built without the log, appended afterwards
    assert hub_cli(build) == 0
    capsys.readouterr()
    assert hub_cli(["log", "append", "--log", log, "--key", os.path.join(keys, "hub-log.key"),
                    os.path.join(out, "hl1+sha.v1.gwl"), os.path.join(out, "hl1+sha.v2.gwl")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["indices"] == [0, 1] and res["head"]["size"] == 2 and res["proofs_written"] == 2
    assert hub_cli(["log", "show", "--log", log, "--leaves"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["index"]) for e in shown["entries"]] == [(1, 0), (2, 1)] and shown["head"]["size"] == 2
    assert hub_cli(["log", "proof", "--log", log, os.path.join(out, "hl1+sha.v2.gwl")]) == 0
    proof = capsys.readouterr().out.strip().encode()
    assert proof == open(os.path.join(out, "hl1+sha.v2.proof"), "rb").read()
    shutil.copy(os.path.join(out, "hl1+sha.v2.gwl"), tmp_path / "copy.gwl")
    assert hub_cli(["log", "verify", log, "--lists", out]) == 0
    assert json.loads(capsys.readouterr().out)["lists_checked"] == 2
    # a device with the log key needs the proofs: the folder loads
    from agent.lists.store import load_folder
    from agent.lists.trust import TrustStore

    trust = TrustStore.from_specs([os.path.join(keys, "hl1.pub"), os.path.join(keys, "hub-log.pub")])
    res = load_folder(out, trust)
    assert res.refused == [] and res.lists["hl1/sha"].version == 2
    assert audit(log)["size"] == 2
