"""No broker at all (a school with lists on disk): nothing is lost at a restart, and the operator
can export what the device holds. Pending (unconfirmed) hits are recorded with report fields only:
never a hash of the image, never its probes."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import namedtuple

from agent.action import Action
from agent.matching.scanner import Hit, ScanResult
from agent.policy import Policy, PolicySettings
from agent.reports.pending import KEYS, PendingHits, read_records
from agent.reports.spool import ReportSpool
from tests.paths import ROOT

FakeList = namedtuple("FakeList", "source name version signal")
FakeHashes = namedtuple("FakeHashes", "pdq")
IMAGE_PDQ = "f0e1d2c3b4a59687" * 4          # the viewed image's perceptual hash: never on disk
IMAGE_SHA = "9a" * 32                        # ... nor its digest
PROBE = (0xFFFF, bytes.fromhex(IMAGE_SHA))  # ... nor the probes confirmation blinds
URL = "http://cdn.example/x/1.jpg?session=secret-token"


def result(signal="sha256", confirmed=False, entry=None, distance=None):
    lst = FakeList("hl1", "known" if signal != "pdq" else "pdq", 3, signal)
    hit = Hit(lst, (PROBE,), confirmed, distance, entry)
    return ScanResult("match" if signal != "pdq" or confirmed else "candidate", (hit,),
                      hashes=FakeHashes(bytes.fromhex(IMAGE_PDQ)), digests={"sha256": bytes.fromhex(IMAGE_SHA)})


def agent_parts(state, confirmer=None, scanner_confirm=None):
    spool = ReportSpool(os.path.join(state, "spool"))
    pending = PendingHits(os.path.join(state, "pending"), hosting="url-noquery")
    action = Action(spool=spool, hosting="url-noquery", device_secret="s" * 64)
    policy = Policy(PolicySettings(), confirmer, scanner_confirm, action.report, pending=pending)
    return spool, pending, policy


def export(state, fmt="json"):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "reports", "export", "--state-dir", str(state),
                        "--format", fmt], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def test_pending_hits_survive_a_restart_and_are_exported_without_image_hashes(tmp_path):
    state = str(tmp_path / "state")
    spool, pending, policy = agent_parts(state)
    # offline: exact hits block, perceptual candidates pass; neither is a report
    assert policy.decide(result("sha256"), URL).action == "block"
    assert policy.decide(result("pdq", distance=12), URL).action == "allow"
    assert len(spool) == 0 and len(pending) == 2 and policy.counters.pending == 2
    # a confirmed hit (the hub's entries on the device confirmed it): a report, spooled durably
    spool.put("ab" * 16, b"placeholder")  # an arbitrary earlier report id
    spool.ack(["ab" * 16])
    Action(spool=spool, hosting="url-noquery").report(result("sha256", True, "case-7", 0), URL)
    # export while the agent still holds its folders (it reads without the lock)
    out, err = export(state)
    rows = json.loads(out)
    assert sorted(r["state"] for r in rows) == ["pending", "pending", "unsent"], rows
    assert "1 unsent report(s), 2 pending hit(s)" in err
    spool.close()
    pending.close()
    # restart: a new process would open the same folders; nothing is lost
    spool, pending, policy = agent_parts(state)
    assert len(pending) == 2 and len(spool) == 1
    spool.close()
    pending.close()
    out, _ = export(state)
    rows = json.loads(out)
    pend = [r for r in rows if r["state"] == "pending"]
    assert len(pend) == 2 and all(set(r) == set(KEYS) | {"state"} for r in pend)
    assert {r["signal"] for r in pend} == {"sha256", "pdq"} and {r["entry"] for r in pend} == {None}
    assert all(r["hosting"] == {"url": "http://cdn.example/x/1.jpg"} for r in pend)
    assert all(r["time"].endswith(":00:00Z") for r in pend)
    unsent = [r for r in rows if r["state"] == "unsent"]
    assert unsent[0]["entry"] == "case-7" and unsent[0]["schema"] == 1
    on_disk = b"".join(open(os.path.join(d, f), "rb").read() for d in (os.path.join(state, "pending"),
                                                                       os.path.join(state, "spool"))
                       for f in os.listdir(d))
    for secret in (IMAGE_PDQ, IMAGE_SHA, "9a9a9a9a", "secret-token"):
        assert secret.encode() not in on_disk and secret not in out
    table = list(csv.DictReader(io.StringIO(export(state, "csv")[0])))
    assert len(table) == 3 and {t["state"] for t in table} == {"pending", "unsent"}


def test_reconfirmed_and_refuted_hits_leave_the_pending_folder(tmp_path):
    state = str(tmp_path / "state")
    hub = {"up": False}

    def confirmer(res):
        return {"hl1/known": "entries"} if hub["up"] else {}

    def scanner_confirm(res, answered):
        hit = res.hits[0]
        if hit.probes == ((0xFFFF, b"\x11" * 32),):  # the hub's entries confirm this one ...
            return res._replace(hits=(hit._replace(confirmed=True, entry_id="case-1", distance=0),))
        return res._replace(verdict="clean", hits=())  # ... and refute the other

    spool, pending, policy = agent_parts(state, confirmer, scanner_confirm)
    good, bad = result("sha256"), result("sha256")
    good = good._replace(hits=(good.hits[0]._replace(probes=((0xFFFF, b"\x11" * 32),)),))
    bad = bad._replace(hits=(bad.hits[0]._replace(probes=((0xFFFF, b"\x22" * 32),)),))
    policy.decide(good, URL)
    policy.decide(bad, URL)
    assert len(pending) == 2 and len(spool) == 0
    assert policy.reconfirm() == 0 and len(pending) == 2  # the hub is still away
    hub["up"] = True
    assert policy.reconfirm() == 1
    assert len(spool) == 1 and len(pending) == 0 and policy.counters.pending == 0
    assert [s for s, _ in read_records(state)] == ["unsent"]
    spool.close()
    pending.close()


def test_export_says_what_is_wrong_with_the_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "agent.cli", "reports", "export", "--state-dir",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "holds no report spool" in r.stderr
