"""The fleet simulator's smoke test (the thousands are bench/bench_cluster.py's, by hand).

300 simulated devices in 2 processes on the 3-node cluster: every one moves to the new version by
the delta path through the agent's own checks, delivers its reports to two collector instances that
split the partitions (a node killed in the middle), gets its batch of anonymous tokens (the proof
checked against the signed token key) from two confirmation-service instances that split the
partitions, and gets its private confirmation requests (evaluation + fetch, on random partitions, so
an evaluation and its fetch often reach different instances) answered: the listed entry opens, an
unlisted digest opens nothing, a hit among three misses opens its entry and nothing else.
"""
from __future__ import annotations

import hashlib

import pytest

from agent.confirm.sealed import EXACT_BAND
from tests.cluster.test_faults import collector, confirm_service, stored_ids
from tests.listkit import Hub, only, random_entries
from agent.mqtt import MqttClient, Topics
from tools.fleetsim import OUTCOMES, SimFleet
from tools.publish import publish_lists


@pytest.mark.slow
def test_simulated_fleet_updates_reports_and_confirms(aedes_cluster, tmp_path):
    from tests.brokercluster import Deployment
    d = Deployment.of_cluster(aedes_cluster)
    hub = Hub(tmp_path / "hub")
    known = random_entries(1000, 1)
    added = random_entries(20, 2)
    v1 = hub.build(known)
    v2 = hub.build(known + added)
    db = tmp_path / "reports.db"
    cols = [collector(d, db, "col-a"), collector(d, db, "col-b")]
    svcs = [confirm_service(d, hub, tmp_path, "conf-a"), confirm_service(d, hub, tmp_path, "conf-b")]
    fleet = SimFleet(d.urls, 300, [hub.pub_path], processes=2, held=[v1], resend_after=10.0, resend_max=20.0,
                     report_sources=["hotline-a", "hotline-b"]).start(120)
    try:
        with MqttClient(d.urls, "publisher") as pub:
            publish_lists(pub, Topics(), only([v1, v2], tmp_path / "p"), clear_stale=False)
        assert len(fleet.wait_active("hl1/sha", 2, timeout=120)) == 300
        assert fleet.via == {"delta": 300}
        total = fleet.reports(4, seed="smoke")
        aedes_cluster.kill_node(1)
        s = fleet.wait_reports_acked(total, timeout=120)
        assert s["reports_acked"] == total == 1200 and s["spooled"] == 0
        assert len(stored_ids(db)) == total  # once each, across both collectors

        # every device's batch, each from the instance holding its login's partition, proofs checked
        toks = fleet.fetch_tokens(64, timeout=30.0)
        assert toks == {"ok": 300, "timeout": 0, "refused": 0, "bad": 0, "issued": 300 * 64}
        assert fleet.stats()["tokens_held"] == 300 * 64

        unlisted = hashlib.sha256(b"not on any list").digest()
        misses = [(EXACT_BAND, hashlib.sha256(b"miss %d" % i).digest()) for i in range(3)]
        jobs = [("hl1/sha", [(EXACT_BAND, known[0].hash)], [known[0].id]),
                ("hl1/sha", [(EXACT_BAND, unlisted)], []),
                ("hl1/sha", misses + [(EXACT_BAND, added[3].hash)], [added[3].id])]  # new in v2
        c = fleet.confirm_load(rate=100, duration=2, jobs=jobs, timeout=3.0)
        assert c["sent"] >= 150 and sum(c[o] for o in OUTCOMES) == c["sent"], c
        assert c["wrong"] == c["bad"] == c["refused"] == c["no_tokens"] == c["no_list"] == 0, c
        assert c["answered"] >= 0.95 * c["sent"], c  # the cluster lost a node, the hub is up
        assert fleet.stats()["tokens_held"] == 300 * 64 - c["sent"]  # one token spent a request
    finally:
        fleet.stop()
        for p in svcs + cols:
            p.stop()
