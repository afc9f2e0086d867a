import pytest

from agent.intake.proxy.server import ProxyServer
from tests.intake.icap.support import LoopThread, MarkerInspector, loop_threads


@pytest.fixture
def proxy():
    """make(inspector=None, **ProxyServer keywords) -> LoopThread (allow_loopback_upstream unless told)."""
    def build(inspector, listen_host="127.0.0.1", **kw):
        kw.setdefault("allow_loopback_upstream", True)
        return LoopThread(ProxyServer(inspector, **kw), host=listen_host)
    yield from loop_threads(MarkerInspector, build)
