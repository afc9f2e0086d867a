"""The ``icap`` fixture: start IcapServer instances on a loop thread; they stop after the test."""

import pytest

from agent.intake.icap.server import IcapServer
from tests.intake.icap.support import LoopThread, MarkerInspector, loop_threads


@pytest.fixture
def icap():
    yield from loop_threads(MarkerInspector, lambda inspector, **kw: LoopThread(IcapServer(inspector, **kw)))
