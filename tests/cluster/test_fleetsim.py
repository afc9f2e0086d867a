"""The fleet simulator's smoke test (the thousands are bench/bench_cluster.py's, by hand).

300 simulated devices in 2 processes on the 3-node cluster: every one moves to the new version by
the delta path through the agent's own checks, delivers its reports to two collector instances that
split the partitions (a node killed in the middle), and gets its confirmation requests answered.
"""
from __future__ import annotations

import pytest

from agent.core.lsh import exact_short_key
from tests.cluster.test_faults import collector, stored_ids, HubProcess, LEASE
from tests.listkit import Hub, only, random_entries
from agent.mqtt import MqttClient, Topics
from tools.fleetsim import SimFleet
from tools.publish import publish_lists


@pytest.mark.slow
def test_simulated_fleet_updates_reports_and_confirms(aedes_cluster, tmp_path):
    from tests.brokercluster import Deployment
    d = Deployment.of_cluster(aedes_cluster)
    hub = Hub(tmp_path / "hub")
    known = random_entries(1000, 1)
    v1 = hub.build(known)
    v2 = hub.build(known + random_entries(20, 2))
    db = tmp_path / "reports.db"
    cols = [collector(d, db, "col-a"), collector(d, db, "col-b")]
    argv = ["serve", "--lists", hub.out, "--db", str(tmp_path / "c.db"), "--client-id", "conf-a"] + LEASE
    for u in d.urls:
        argv += ["--broker", u]
    svc = HubProcess(argv, "serving ")
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
        lists = {"hl1/sha": {"version": 2, "keys": [exact_short_key("sha256", known[0].hash)]}}
        c = fleet.confirm_load(rate=100, duration=2, lists=lists, timeout=3.0)
        assert c["confirm_sent"] >= 150 and c["confirm_answered"] + c["confirm_timeouts"] == c["confirm_sent"]
        assert c["confirm_answered"] >= 0.95 * c["confirm_sent"]  # the cluster lost a node, the hub is up
    finally:
        fleet.stop()
        svc.stop()
        for col in cols:
            col.stop()
