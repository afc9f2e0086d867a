"""The fleet simulator: several real updaters on one broker all reach the new version."""

from __future__ import annotations

from tests.brokers import mosquitto  # noqa: F401
from tests.listkit import Hub, only, random_entries
from tools.fleet import publish_to_active


def test_fleet_moves_to_the_new_version(mosquitto, tmp_path):
    hub = Hub(tmp_path / "hub")
    v1 = hub.build(random_entries(500, 1))
    v2 = hub.build(random_entries(500, 1) + random_entries(20, 2))
    r = publish_to_active(mosquitto.url, only([v1, v2], tmp_path / "p"), 5, hub.trust(), "hl1/sha", 2, held=[v1])
    assert r["agents"] == 5 and r["via"] == ["delta"]
    assert 0 <= r["first_s"] <= r["median_s"] <= r["last_s"]
    r = publish_to_active(mosquitto.url, only([v2], tmp_path / "q"), 3, hub.trust(), "hl1/sha", 2)
    assert r["via"] == ["snapshot"]
