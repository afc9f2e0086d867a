"""The ``icap`` fixture: start IcapServer instances on a loop thread; they stop after the test."""

import pytest

from agent.intake.icap.server import IcapServer
from tests.intake.icap.support import LoopThread, MarkerInspector


@pytest.fixture
def icap():
    started = []

    def make(inspector=None, **kw):
        inspector = inspector or MarkerInspector()
        server = IcapServer(inspector, **kw)
        lt = LoopThread(server)
        lt.inspector = inspector
        started.append(lt)
        return lt

    yield make
    for lt in started:
        lt.stop()
