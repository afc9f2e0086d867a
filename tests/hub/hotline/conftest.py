"""Fixtures of the hotline hub's tests: the store over both backends, the test DNS server."""
from __future__ import annotations

import pytest

from tests.dnsserver import TestDns
from tests.hub.hotline.kit import dns_records
from tests.postgres import PostgresCluster


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL cluster for the session (each test gets its own database)."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request, tmp_path):
    """A database argument for open_store: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("pg_cluster").database()


@pytest.fixture
def dns():
    """dnsmasq on loopback answering the benign test names (tests/hub/hotline/kit.py NAMES)."""
    server = TestDns(dns_records()).start()
    try:
        yield server
    finally:
        server.stop()
