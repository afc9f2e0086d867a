"""Fixtures for the DNS intake: a loopback test resolver on a thread, and the forwarder in front of it."""

import asyncio
import threading

import pytest

from agent.intake import Decision, Inspector
from agent.intake.dns.server import DnsServer, Upstreams
from tests.intake.dns.upstream import Zone, serve
from tests.intake.icap.support import LoopThread, loop_threads


class NameInspector(Inspector):
    """Blocks names ending in one of ``listed``; records every name it was asked about."""

    def __init__(self, listed=(b"blocked.example.org",), fail=False):
        self.listed = tuple(listed)
        self.asked = []
        self.fail = fail

    def inspect_name(self, name):
        self.asked.append(name)
        if self.fail:
            raise RuntimeError("inspector fault")
        low = bytes(name).lower()
        if any(low == n or low.endswith(b"." + n) for n in self.listed):
            return Decision("block", "match-confirmed", None, "//" + low.decode("latin-1"))
        return Decision("allow", "clean", None, None)


class UpstreamThread:
    """tests.intake.dns.upstream's resolver on a loop thread; ``port``, ``zone.seen``."""

    def __init__(self):
        self.zone = Zone()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = None

        def up(port):
            self.port = port
            ready.set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start():
            return asyncio.ensure_future(serve(self.zone, "127.0.0.1", 0, up))
        self.task = asyncio.run_coroutine_threadsafe(start(), self.loop).result(20)
        if not ready.wait(20):
            raise RuntimeError("test resolver did not start: %r" % (self.task.exception()
                                                                    if self.task.done() else "still starting"))

    def stop(self):
        async def finish():
            # every task of this loop (the server and its TCP handlers) ends here, on the loop, so none
            # is left pending for the garbage collector to log about during a later test
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(finish(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def upstream():
    u = UpstreamThread()
    yield u
    u.stop()


@pytest.fixture
def forwarder(upstream):
    def build(inspector, upstreams=None, **kw):
        return LoopThread(DnsServer(inspector, upstreams=upstreams or Upstreams(["127.0.0.1:%d" % upstream.port]), **kw))
    yield from loop_threads(NameInspector, build)
