"""Shared pytest fixtures: the real mosquitto broker fixture lives in tests/brokers.py."""

from tests.brokers import mosquitto  # noqa: F401
