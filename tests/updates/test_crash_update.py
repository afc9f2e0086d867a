"""Crash safety: SIGKILL the agent at random points while it applies an update, 50 times.

Each iteration runs the real update path (announcement checks, delta, full verification, atomic
install) in a fresh subprocess and kills it after a random delay. Afterwards the state folder must
load the old or the new version, every list file in it must verify, and nothing else may be there
but leftover temp files that the loader ignores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent.updates.updater import ListStore
from tests.listkit import Hub, random_entries
from tools.publish import BuiltList, Plan
from tests import paths

ROOT = str(paths.ROOT)
ITERATIONS = 50

APPLY = textwrap.dedent("""
    import json, sys, time
    from agent.lists.trust import TrustStore
    from agent.mqtt import Topics
    from agent.lists.store import ListStore
    from agent.updates.updater import Updater
    from tools.publish import BuiltList, Plan

    state, pub, old, new, chunk = sys.argv[1:6]
    plan = Plan(BuiltList.load(new), BuiltList.load(old), int(chunk))

    class PlanFetcher:
        # stands in for the broker: hands out the published delta or snapshot bytes
        def fetch(self, base, part, chunk_size, what):
            return plan.delta if what == "delta" else plan.newest.data

    store = ListStore(state, TrustStore.from_specs([pub]))
    updater = Updater(None, Topics(), store)
    updater.fetcher = PlanFetcher()
    payload = json.dumps(plan.announcement()).encode()
    print("ready", flush=True)
    t = time.perf_counter()
    outcome = updater.handle(payload, Topics().manifest(plan.newest.source, plan.newest.list))
    print("%s %.6f" % (outcome, time.perf_counter() - t), flush=True)
""")


def _spawn(state, hub, v1, v2):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", APPLY, state, hub.pub_path, v1, v2, "65536"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def _fresh_state(tmp_path, i, v1):
    state = str(tmp_path / ("state%d" % i))
    os.makedirs(state)
    shutil.copy(v1, state)
    return state


@pytest.mark.slow
def test_sigkill_during_update_leaves_old_or_new(tmp_path):
    hub = Hub(tmp_path / "hub")
    base = random_entries(60000, 1)
    v1 = hub.build(base, capacity=100000)
    v2 = hub.build(base + random_entries(3000, 2), capacity=100000)
    trust = hub.trust()
    assert BuiltList.load(v2).version == 2 and Plan(BuiltList.load(v2), BuiltList.load(v1), 65536).delta

    # calibrate: how long the apply takes after the child is ready
    state = _fresh_state(tmp_path, 999, v1)
    p = _spawn(state, hub, v1, v2)
    out, err = p.communicate(timeout=60)
    lines = out.split()
    assert lines[:2] == ["ready", "installed"], (out, err)
    window = float(lines[2])
    assert ListStore(state, trust).load()["hl1/sha"].version == 2

    rng = random.Random(int(os.environ.get("GATEWATCH_CRASH_SEED", "20261128")))
    outcomes = {1: 0, 2: 0}
    for i in range(ITERATIONS):
        state = _fresh_state(tmp_path, i, v1)
        p = _spawn(state, hub, v1, v2)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, window * 1.3))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        store = ListStore(state, trust)
        loaded = store.load()
        assert list(loaded) == ["hl1/sha"], "iteration %d: no list loads (%s)" % (i, os.listdir(state))
        version = loaded["hl1/sha"].version
        assert version in (1, 2)
        outcomes[version] += 1
        # every list file present verifies; anything else is an ignored temp file
        for name in os.listdir(state):
            if name.endswith(".gwl"):
                with open(os.path.join(state, name), "rb") as f:
                    data = f.read()
                from agent.lists.verify import verify_bytes
                verify_bytes(data, trust)
            else:
                assert name.startswith("."), name
        # and the agent can still move on to the new version from whatever it holds
        if version == 1:
            p = _spawn(state, hub, v1, v2)
            out, _ = p.communicate(timeout=60)
            assert "installed" in out
            assert ListStore(state, trust).load()["hl1/sha"].version == 2
    print(json.dumps({"iterations": ITERATIONS, "old": outcomes[1], "new": outcomes[2],
                      "apply_window_s": window}))
    assert outcomes[1] and outcomes[2], "the kills never landed on both sides of the install: %s" % outcomes
