"""`gatewatch-hub demo --json`: everything in one process, nothing beyond the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests import paths

ROOT = str(paths.ROOT)


@pytest.mark.slow
def test_demo_json_blocks_and_reports(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "demo", "--json", "--keep", str(tmp_path / "w")],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout  # one JSON object, nothing else on stdout
    s = json.loads(lines[0])
    assert s["blocked"] >= 1
    assert s["reports_received"] == s["blocked"] == s["reports_sent"]
    assert s["fetched"] == len(s["items"]) and s["as_expected"], s["items"]
    assert set(s["lists"]) == {"demo-hotline/sha256", "demo-hotline/pdq"}
    # the default path shows the transparency log: both lists came with proofs under a head of size 2
    assert s["log"] == {"demo": {"size": 2, "fork": None}}
    assert s["hal"] == "emulated"
    # no list in force before the first arrives over MQTT: the LED says so; then ok, and blocks
    h = s["led_history"]
    assert h[0] == "fault" and "updating" in h and "ok" in h[h.index("updating"):] and "blocked" in h
    # the hub stored exactly those reports, and none of them names the device's client
    import sqlite3
    db = sqlite3.connect(str(tmp_path / "w" / "hub" / "reports.sqlite"))
    rows = db.execute("SELECT entry, hosting FROM reports").fetchall()
    assert len(rows) == s["blocked"]
    assert {r[0] for r in rows} == {"demo-known-1", "demo-known-2", "demo-known-3", "demo-known-4"}


def test_demo_human_output(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tools.hub_cli", "demo"], capture_output=True, text=True,
                       cwd=str(tmp_path), env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "blocked 4" in r.stdout and "received at the hub 4" in r.stdout
