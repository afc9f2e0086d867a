"""The transparency log on the device (agent.lists.translog) without a broker: the folder loader
refuses a validly signed list that is not in the log; the newest head only ever grows, through
consistency proofs; a rewritten history, a fork or a smaller head from another history is caught
and kept as evidence; hostile proofs are refused with a reason and change nothing."""

from __future__ import annotations

import base64
import json
import os
import shutil

import pytest

from agent.core import merkle
from agent.lists import translog
from agent.lists.store import ListStore, load_folder
from agent.lists.translog import LogRefused, LogState, LogVerifier
from agent.lists.trust import TrustStore
from tests.listkit import Hub, only, random_entries
from tools.translog import LogStore, leaf_of_file


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _lst(path):
    """(manifest, signed bytes) of a list file, as a verified LoadedList would give them."""
    from agent.core import listfile

    lf = listfile.parse(_read(path))
    return lf.manifest, lf.signed_bytes()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One hub with a log: sha v1, v2, v3 appended one at a time (heads of sizes 1, 2, 3)."""
    h = Hub(tmp_path_factory.mktemp("hub"), log=True)
    h.v = [None] + [h.build(random_entries(200, 1) + random_entries(10 * i, 2 + i)) for i in range(3)]
    return h


def _evil_log(hub, tmp_path, changed_first=True, sizes=3):
    """Another history under the same log key and name: leaf 0 is another (validly signed) list
    file, the rest as in the genuine log. Returns (log store, folder of its lists with proofs)."""
    with open(hub.log_pub_path, "r", encoding="utf-8") as f:
        evil = LogStore.create(str(tmp_path / "evil-log"), "hub", f.read())
    out = str(tmp_path / "evil-built")
    other = hub.build(random_entries(201, 7), version=1, out=out, logged=False) if changed_first else hub.v[1]
    files = [other] + [shutil.copy(hub.v[i], out) for i in range(2, sizes + 1)]
    for f in files:
        evil.append([f], hub.log_key)
    evil.write_folder(out)
    return evil, out


# ----------------------------------------------------------------------------- the folder rule

def test_no_log_key_no_proof_needed(hub, tmp_path):
    """Without a log key in the trust store, today's behaviour: a list without a proof loads."""
    folder = tmp_path / "plain"
    folder.mkdir()
    shutil.copy(hub.v[1], folder)
    res = load_folder(str(folder), TrustStore.from_specs([hub.pub_path]))
    assert list(res.lists) == ["hl1/sha"] and res.refused == []


def test_folder_refuses_a_signed_list_that_is_not_in_the_log(hub, tmp_path):
    trust = hub.trust()
    # validly signed by the source's key, never appended to the log
    stray = hub.build(random_entries(50, 99), version=9, out=str(tmp_path / "stray"), logged=False)
    res = load_folder(os.path.dirname(stray), trust)
    assert res.lists == {}
    assert "without a log proof" in res.refused[0].reason
    # the same list with a genuine proof of another version next to it is refused as well
    shutil.copy(hub.v[2][:-4] + ".proof", stray[:-4] + ".proof")
    res = load_folder(os.path.dirname(stray), trust)
    assert res.lists == {} and "is not in log hub" in res.refused[0].reason, res.refused
    # the genuine folder loads: every version with its proof, the newest in force
    res = load_folder(hub.out, trust)
    assert res.refused == [] and res.lists["hl1/sha"].version == 3


def test_log_key_names_its_sources_and_source_override(hub, tmp_path):
    trust = hub.trust()
    assert trust.logs() == ["hub"] and trust.logs_for("hl1") == ["hub"] and trust.logs_for("other") == []
    only_other = TrustStore.from_specs([hub.pub_path, "other=" + hub.log_pub_path])
    assert only_other.logs_for("hl1") == [] and only_other.logs_for("other") == ["hub"]
    # a list key is not a log key: a head signed with the source's key is refused
    head = LogStore(hub.log.folder).newest_head()
    signed = head.signed
    forged = translog.head_wire(signed, hub.key.sign(translog.head_message(signed)))
    with pytest.raises(LogRefused, match="signature does not verify"):
        translog.verify_head(forged, trust)


def test_scan_refuses_a_list_not_in_the_log(hub, tmp_path):
    """`gatewatch scan` answers against every list or not at all: a list without its proof stops it."""
    from agent.cli import main as cli

    folder = only([hub.v[3]], tmp_path / "scan")
    os.unlink(os.path.join(folder, os.path.basename(hub.v[3])[:-4] + ".proof"))
    img = tmp_path / "x.bin"
    img.write_bytes(b"not an image")
    assert cli(["scan", "--lists", folder, "--trust", hub.pub_path, "--trust", hub.log_pub_path, str(img)]) == 2
    assert cli(["scan", "--lists", hub.out, "--trust", hub.pub_path, "--trust", hub.log_pub_path, str(img)]) == 0


# ----------------------------------------------------------------------------- heads only grow

def _verifier(hub, tmp_path, name="dev"):
    return LogVerifier(hub.trust(), LogState(str(tmp_path / (name + "-log-heads.json"))))


def test_head_grows_by_consistency_and_is_kept_across_restarts(hub, tmp_path):
    steps = translog.FolderSteps(hub.out)
    v = _verifier(hub, tmp_path)
    m1, s1 = _lst(hub.v[1])
    log = LogStore(hub.log.folder)
    assert v.check_list(m1, s1, log.proof_for(leaf_of_file(_read(hub.v[1]))[0], size=1)).size == 1
    # a proof under head 3: the device walks 1 -> 2 -> 3 through the folder's steps
    m3, s3 = _lst(hub.v[3])
    assert v.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"), steps).size == 3
    assert v.held["hub"].size == 3
    again = _verifier(hub, tmp_path)  # a restart: the newest head and the heads seen are on disk
    assert again.held["hub"].size == 3 and sorted(again.state.seen["hub"]) == [1, 2, 3]
    # the old proof of v1 (head 1) is still good: that head was seen here before
    assert again.check_list(m1, s1, log.proof_for(leaf_of_file(_read(hub.v[1]))[0], size=1)).size == 1
    # without steps a newer head cannot be shown to extend the held one: refused for now, nothing changes
    fresh = LogVerifier(hub.trust())
    fresh.check_list(m1, s1, log.proof_for(leaf_of_file(_read(hub.v[1]))[0], size=1))
    with pytest.raises(LogRefused) as e:
        fresh.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"))
    assert e.value.transient and not e.value.fork and fresh.held["hub"].size == 1


def test_an_older_genuine_head_is_accepted_by_walking_up(hub, tmp_path):
    v = LogVerifier(hub.trust())
    m3, s3 = _lst(hub.v[3])
    v.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"))  # first seen: size 3
    m1, s1 = _lst(hub.v[1])
    old = LogStore(hub.log.folder).proof_for(leaf_of_file(_read(hub.v[1]))[0], size=1)
    assert v.check_list(m1, s1, old, translog.FolderSteps(hub.out)).size == 1
    assert v.held["hub"].size == 3 and not v.fault()


def test_rewritten_earlier_leaf_is_a_fork_on_the_device(hub, tmp_path):
    """The log signs a second history whose leaf 0 changed: a device that holds the genuine head of
    size 2 walks the new history's steps, meets its head of size 2 with another root, and refuses."""
    v = _verifier(hub, tmp_path)
    m2, s2 = _lst(hub.v[2])
    v.check_list(m2, s2, LogStore(hub.log.folder).proof_for(leaf_of_file(_read(hub.v[2]))[0], size=2))
    _evil, out = _evil_log(hub, tmp_path)
    m3, s3 = _lst(hub.v[3])
    evil_proof = _read(os.path.join(out, os.path.basename(hub.v[3])[:-4] + ".proof"))
    with pytest.raises(LogRefused) as e:
        v.check_list(m3, s3, evil_proof, translog.FolderSteps(out))
    assert e.value.fork and "forked" in str(e.value) and "size 2" in str(e.value)
    assert v.held["hub"].size == 2 and v.fault()
    # the evidence (two signed heads) outlives a restart, and so does the fault
    again = _verifier(hub, tmp_path)
    assert again.fault() and len(again.state.forks["hub"]["heads"]) == 2
    assert again.status()["hub"]["fork"]["reason"].startswith("log hub is forked")
    # the folder rule keeps the last good list: the daemon's store refuses the forked folder's lists
    res = load_folder(out, hub.trust(), log_verifier=again)
    assert res.lists == {} and len(res.refused) == 3
    assert all("forked" in r.reason for r in res.refused), res.refused


def test_two_heads_of_one_size_with_different_roots_is_a_fork(hub, tmp_path):
    v = LogVerifier(hub.trust())
    m3, s3 = _lst(hub.v[3])
    v.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"))
    _evil, out = _evil_log(hub, tmp_path)
    with pytest.raises(LogRefused, match="two tree heads of size 3 with different roots") as e:
        v.check_list(m3, s3, _read(os.path.join(out, os.path.basename(hub.v[3])[:-4] + ".proof")))
    assert e.value.fork and v.held["hub"].size == 3


def test_a_smaller_head_from_another_history_is_a_fork(hub, tmp_path):
    """Holding head 3, a proof under another history's head 2: walking that history up to size 3
    reaches another root than the one held."""
    v = LogVerifier(hub.trust())
    m3, s3 = _lst(hub.v[3])
    v.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"))
    evil, out = _evil_log(hub, tmp_path)
    m2, s2 = _lst(hub.v[2])
    smaller = evil.proof_for(leaf_of_file(_read(hub.v[2]))[0], size=2)
    with pytest.raises(LogRefused) as e:
        v.check_list(m2, s2, smaller, translog.FolderSteps(out))
    assert e.value.fork and "reaches size 3 with another root" in str(e.value)
    # and a smaller head the device accepted before, replayed with another root, is a fork at once
    w = LogVerifier(hub.trust())
    w.check_list(m2, s2, LogStore(hub.log.folder).proof_for(leaf_of_file(_read(hub.v[2]))[0], size=2))
    w.check_list(m3, s3, _read(hub.v[3][:-4] + ".proof"), translog.FolderSteps(hub.out))
    with pytest.raises(LogRefused, match="another root than the one accepted here before"):
        w.check_list(m2, s2, smaller)


def test_offer_step_follows_heads_and_catches_a_forked_step(hub, tmp_path):
    log = LogStore(hub.log.folder)
    steps = log.steps()
    v = LogVerifier(hub.trust())
    assert v.offer_step(steps[0]) == "adopted"
    assert v.offer_step(steps[1]) == "advanced" and v.offer_step(steps[2]) == "advanced"
    assert v.offer_step(steps[2]) == "current" and v.offer_step(steps[0]) == "known"
    evil, _out = _evil_log(hub, tmp_path)
    with pytest.raises(LogRefused) as e:
        v.offer_step(evil.steps()[2])
    assert e.value.fork and v.held["hub"].size == 3
    # a step whose proof was altered on the way: refused, but no fork (anyone on the path can do that)
    w = LogVerifier(hub.trust())
    w.offer_step(steps[1])
    doc = json.loads(steps[2])
    doc["consistency"] = [merkle.leaf_hash(b"x").hex()] * len(doc["consistency"])
    with pytest.raises(LogRefused, match="does not verify") as e:
        w.offer_step(json.dumps(doc).encode())
    assert not e.value.fork and not w.fault() and w.held["hub"].size == 2


# ----------------------------------------------------------------------------- hostile proofs

def _mutations(proof: bytes, other_index: int):
    """(what, payload, reason fragment) of hostile variants of a genuine proof."""
    doc = json.loads(proof)
    head_doc = json.loads(doc["head"]["signed"])

    def with_(**kw):
        d = json.loads(proof)
        d.update(kw)
        return json.dumps(d).encode()

    def with_head(**kw):
        h = dict(head_doc)
        h.update(kw)
        d = json.loads(proof)
        d["head"] = dict(d["head"], signed=json.dumps(h, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
        return json.dumps(d, ensure_ascii=False).encode()

    inc = doc["inclusion"]
    yield "not JSON", b"\xff\xfe{", "not JSON"
    yield "a JSON list", b"[1, 2]", "JSON object"
    yield "too large", b" " * (70 * 1024), "at most"
    yield "missing field", json.dumps({k: v for k, v in doc.items() if k != "index"}).encode(), "exactly"
    yield "extra field", with_(extra=1), "exactly"
    yield "schema as text", with_(schema="1"), "schema"
    yield "index negative", with_(index=-1), "whole number"
    yield "index huge", with_(index=2 ** 64), "whole number"
    yield "index float", with_(index=1.0), "whole number"
    yield "index boolean", with_(index=True), "whole number"
    yield "index as ASCII digits", with_(index=str(doc["index"])), "whole number"
    yield "index as non-ASCII digits", with_(index="\u0661"), "whole number"
    yield "index beyond the tree", with_(index=head_doc["size"]), "not below"
    yield "proof for another leaf", with_(index=other_index), "not in log"
    yield "path one hash short", with_(inclusion=inc[:-1]), "not in log"
    yield "path one hash long", with_(inclusion=inc + [inc[0]]), "not in log"
    yield "path of 100000 hashes", with_(inclusion=[inc[0]] * 100000), "at most"
    yield "path not a list", with_(inclusion="ab" * 32), "list of hashes"
    yield "hash upper case", with_(inclusion=[h.upper() for h in inc]), "lowercase hex"
    yield "hash short", with_(inclusion=[h[:-1] for h in inc]), "lowercase hex"
    yield "hash of non-ASCII digits", with_(inclusion=["\u0661" * 64] * len(inc)), "lowercase hex"
    yield "hash as number", with_(inclusion=[12] * len(inc)), "lowercase hex"
    yield "head not an object", with_(head="head"), "exactly schema"
    yield "head size huge", with_head(size=2 ** 60), "whole number"
    yield "head size as text", with_head(size="3"), "whole number"
    yield "head size zero", with_head(size=0), "whole number"
    yield "head root non-ASCII", with_head(root="\u0661" * 64), "ASCII"
    yield "head of another type", with_head(type="gatewatch-timestamp"), "not a gatewatch tree head"
    yield "head size changed, signature kept", with_head(size=head_doc["size"] + 1), "signature does not verify"
    yield "head not canonical", with_(head=dict(doc["head"], signed=doc["head"]["signed"].replace(",", ", "))), \
        "canonical"
    yield "signature short", with_(head=dict(doc["head"], signature=base64.b64encode(b"x" * 63).decode())), "not 64"
    yield "signature not base64", with_(head=dict(doc["head"], signature="!" * 88)), "base64"
    yield "head of an unknown log", with_head(log="elsewhere"), "no trusted key"


def test_hostile_proofs_are_refused_with_a_reason_and_change_nothing(hub, tmp_path):
    state_path = str(tmp_path / "dev-log-heads.json")
    v = LogVerifier(hub.trust(), LogState(state_path))
    m2, s2 = _lst(hub.v[2])
    v.check_list(m2, s2, _read(hub.v[2][:-4] + ".proof"))  # the device holds the newest head
    before = (_read(state_path), v.held["hub"].signed, dict(v.state.seen["hub"]))
    m3, s3 = _lst(hub.v[3])
    genuine = _read(hub.v[3][:-4] + ".proof")
    seen_whats = []
    for what, payload, reason in _mutations(genuine, other_index=1):
        with pytest.raises(LogRefused) as e:
            v.check_list(m3, s3, payload)
        assert reason in str(e.value), "%s: %s" % (what, e.value)
        assert not e.value.fork, what
        assert (_read(state_path), v.held["hub"].signed, dict(v.state.seen["hub"])) == before, what
        seen_whats.append(what)
    assert len(seen_whats) > 30 and not v.fault()
    # the genuine proof still goes through afterwards
    assert v.check_list(m3, s3, genuine).size == 3


def test_hostile_steps_and_state_files(hub, tmp_path):
    v = LogVerifier(hub.trust())
    for payload, reason in ((b"{}", "exactly"), (b"[]", "JSON object"),
                            (json.dumps({"schema": 1, "type": "gatewatch-log-step", "from": None, "from_size": 3,
                                         "head": {}, "consistency": []}).encode(), "first step")):
        with pytest.raises(LogRefused, match=reason):
            v.offer_step(payload)
    assert v.held == {}
    # a damaged state file is read as empty, with the reason kept
    bad = tmp_path / "log-heads.json"
    for content in (b"\x00garbage", b'{"format": 2, "logs": {}}', b'{"format": 1, "logs": {"../x": {}}}'):
        bad.write_bytes(content)
        st = LogState(str(bad))
        assert st.heads == {} and "reading it as empty" in st.problem


def test_list_store_installs_the_proof_and_loads_it_at_restart(hub, tmp_path):
    """The state folder keeps each list's proof beside it; old versions go with their proofs."""
    trust = hub.trust()
    store = ListStore(str(tmp_path / "state" / "lists"), trust)
    assert store.log.state.path == str(tmp_path / "state" / "log-heads.json")
    for i in (1, 2):
        lst = load_folder(only([hub.v[i]], tmp_path / ("v%d" % i)), trust).lists["hl1/sha"]
        store.install(lst, _read(hub.v[i]), _read(hub.v[i][:-4] + ".proof"))
    assert sorted(os.listdir(store.directory)) == ["hl1+sha.v2.gwl", "hl1+sha.v2.proof"]
    again = ListStore(store.directory, trust)
    assert again.load()["hl1/sha"].version == 2 and again.refused == []


def test_fuzzed_proofs_steps_and_leaves_only_ever_refuse(hub):
    """Random byte flips, truncations and JSON value swaps of genuine messages: every one is either
    accepted as what it is or refused with a LogRefused/ProofError, never another exception."""
    import random

    rnd = random.Random(1234)
    v = LogVerifier(hub.trust())
    m3, s3 = _lst(hub.v[3])
    genuine = _read(hub.v[3][:-4] + ".proof")
    step = LogStore(hub.log.folder).steps()[-1]
    leaf = leaf_of_file(_read(hub.v[3]))[0]
    junk = [None, True, -1, 2 ** 70, 1.5, "", "\u0661\u0662", [], {}, [[]], "ff" * 32, ["ff" * 32] * 65]

    def mutate(payload: bytes, binary: bool = False) -> bytes:
        r = rnd.random() * (0.6 if binary else 1.0)
        if r < 0.4:
            b = bytearray(payload)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            return bytes(b)
        if r < 0.6:
            return payload[:rnd.randrange(len(payload))]
        doc = json.loads(payload)
        key = rnd.choice(sorted(doc))
        doc[key] = rnd.choice(junk)
        return json.dumps(doc).encode()

    refused = 0
    for _ in range(600):
        try:
            v.check_list(m3, s3, mutate(genuine))
        except LogRefused:
            refused += 1
        try:
            v.offer_step(mutate(step))
        except LogRefused:
            refused += 1
        try:
            merkle.parse_leaf(mutate(leaf, binary=True))
        except merkle.ProofError:
            refused += 1
    assert refused > 1000 and not v.fault()
    assert v.check_list(m3, s3, genuine).size == 3  # and the genuine proof still passes


def test_standalone_folder_reloads_when_the_proof_arrives(hub, tmp_path):
    """`python -m agent.intake.icap --lists DIR`: a list without its proof is not in force; once the
    proof is put next to it, the next look loads it."""
    from agent.standalone import FolderLists

    folder = only([hub.v[3]], tmp_path / "standalone")
    proof = os.path.join(folder, os.path.basename(hub.v[3])[:-4] + ".proof")
    kept = _read(proof)
    os.unlink(proof)
    fl = FolderLists(folder, [hub.pub_path, hub.log_pub_path])
    assert list(fl.scanner.lists) == [] and "without a log proof" in fl.refused[0].reason
    with open(proof, "wb") as f:
        f.write(kept)
    assert fl.reload() and [lst.version for lst in fl.scanner.lists] == [3] and fl.refused == []


def test_status_shows_the_log_and_a_fork():
    from agent.cli.status import render

    st = {"agent": "x", "running": True, "log": {"hub": {"size": 7, "fork": {"reason": "log hub is forked: ..."},
                                                         "last_refusal": None}}}
    text = render(st)
    assert "log      hub" in text and "head size 7  FORKED" in text and "fork: log hub is forked" in text


def test_daemon_from_a_folder_needs_proofs_and_keeps_the_newest_head(hub, tmp_path):
    """`gatewatch run --lists DIR` (lists.dir, no broker): lists with proofs are in force, one without
    is refused and listed; the newest head lands in <state>/log-heads.json."""
    from agent.config import defaults
    from agent.daemon import Agent

    folder = only([hub.v[2]], tmp_path / "dir")
    stray = hub.build(random_entries(20, 31), version=1, out=str(tmp_path / "stray"), name="other", logged=False)
    shutil.copy(stray, folder)
    conf = defaults()
    conf["agent"].update(state_dir=str(tmp_path / "state"), hal="emulated", status_interval=0.2)
    conf["localapi"]["enabled"] = False
    conf["lists"].update(dir=folder, trust=[hub.pub_path, hub.log_pub_path])
    agent = Agent(conf).start()
    try:
        st = agent.status()
        assert [lst.ident for lst in agent.scanner.lists] == ["hl1/sha"]
        assert [r["file"] for r in st["lists_refused"]] == ["hl1+other.v1.gwl"]
        assert "without a log proof" in st["lists_refused"][0]["reason"]
        assert st["log"]["hub"]["size"] == 3 and st["log"]["hub"]["fork"] is None
    finally:
        agent.stop()
    state = json.loads(_read(str(tmp_path / "state" / "log-heads.json")))
    assert translog.parse_head(state["logs"]["hub"]["head"]).size == 3
