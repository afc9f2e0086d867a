import pytest

from agent.intake.proxy.server import ProxyServer
from tests.intake.icap.support import LoopThread, MarkerInspector


@pytest.fixture
def proxy():
    """make(inspector=None, **ProxyServer keywords) -> LoopThread (allow_loopback_upstream unless told)."""
    started = []

    def make(inspector=None, listen_host="127.0.0.1", **kw):
        inspector = inspector or MarkerInspector()
        kw.setdefault("allow_loopback_upstream", True)
        lt = LoopThread(ProxyServer(inspector, **kw), host=listen_host)
        lt.inspector = inspector
        started.append(lt)
        return lt

    yield make
    for lt in started:
        lt.stop()
