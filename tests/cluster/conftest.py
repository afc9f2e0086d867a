"""Fixtures of the clustered-broker tests: the 3-node aedes cluster, and the same fault tests on the
small deployment (one mosquitto) through ``deployment``."""

import pytest

from tests.brokercluster import Deployment, start_cluster


@pytest.fixture
def aedes_cluster(tmp_path):
    """3 aedes nodes over one Redis, on free loopback ports; stopped after the test."""
    cluster = start_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["cluster", "mosquitto"])
def deployment(request, tmp_path):
    """The clustered deployment (3 aedes nodes over Redis) and the small one (one mosquitto)."""
    d = Deployment(request.param, tmp_path / request.param)
    try:
        yield d
    finally:
        d.stop()
