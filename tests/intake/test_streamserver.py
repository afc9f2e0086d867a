"""agent.intake.streamserver with a toy protocol: per-client bounds, refusal and make-room hooks, the budget."""

import asyncio
import socket
import time
from typing import NamedTuple

import pytest

from agent.intake.streamserver import StreamIntakeServer
from tests.intake.icap.support import LoopThread


class Limits(NamedTuple):
    max_connections: int = 8
    scan_timeout: float = 1.0
    max_connections_per_client: int = 0
    max_held_bytes: int = 1000


class OldLimits(NamedTuple):  # what an intake that knows nothing of the new limits passes (the ICAP service)
    max_connections: int = 8
    scan_timeout: float = 1.0


class Echo(StreamIntakeServer):
    """Answers each line with 'echo: line'; turned-away clients read 'BUSY' or 'NO'."""

    def __init__(self, limits, refuse=(), room=False):
        self._init_intake(None, limits, None, None, None, ("connections", "rejected"))
        self.refuse, self.room, self.writers = set(refuse), room, []

    async def start(self, host, port):
        self._server = await asyncio.start_server(self._accept, host, port)

    def busy_response(self):
        return b"BUSY\n"

    def refuse_client(self, ip):
        return b"NO\n" if ip in self.refuse else None

    async def make_room(self):
        if not self.room or not self.writers:
            return False
        self.writers.pop(0).close()
        await asyncio.sleep(0.05)
        return True

    async def serve_connection(self, reader, writer):
        self.writers.append(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                writer.write(b"echo: " + line)
                await writer.drain()
        finally:
            if writer in self.writers:
                self.writers.remove(writer)


@pytest.fixture
def serve():
    started = []

    def make(*a, **kw):
        lt = LoopThread(Echo(*a, **kw))
        started.append(lt)
        return lt

    yield make
    for lt in started:
        lt.stop()


def talk(port, source="127.0.0.1", line=b"hi\n"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.sendall(line)
    return s, s.recv(100)


def test_connections_per_client_are_bounded(serve):
    lt = serve(Limits(max_connections_per_client=3))
    held = [talk(lt.port)[0] for _ in range(3)]
    s, got = talk(lt.port)
    assert got == b"BUSY\n"
    s2, got2 = talk(lt.port, source="127.0.0.2")  # another address still gets in
    assert got2 == b"echo: hi\n"
    assert lt.server.stats["rejected_per_client"] == 1 and lt.server.connections_of("127.0.0.1") == 3
    for x in held + [s, s2]:
        x.close()
    deadline = time.monotonic() + 3
    while lt.server.connections_of("127.0.0.1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lt.server.connections_of("127.0.0.1") == 0  # counts go back down


def test_limits_without_the_new_fields_keep_the_old_behaviour(serve):
    lt = serve(OldLimits())
    held = [talk(lt.port)[0] for _ in range(8)]  # all from one address: no per-client bound
    s, got = talk(lt.port)
    assert got == b"BUSY\n" and lt.server.stats["rejected"] == 1
    assert lt.server.reserve(10 ** 9) and lt.server.held == 10 ** 9  # no budget: counted, never refused
    for x in held + [s]:
        x.close()


def test_refuse_client_and_make_room_hooks(serve):
    lt = serve(Limits(max_connections=2), refuse={"127.0.0.3"}, room=True)
    assert talk(lt.port, source="127.0.0.3")[1] == b"NO\n" and lt.server.stats["refused_clients"] == 1
    a, b = talk(lt.port)[0], talk(lt.port)[0]
    c, got = talk(lt.port)  # full: make_room closed the oldest
    assert got == b"echo: hi\n" and a.recv(100) == b""
    for x in (a, b, c):
        x.close()


def test_budget_reserve_release():
    srv = Echo(Limits(max_held_bytes=100))
    assert srv.reserve(60) and not srv.reserve(41) and srv.reserve(40)
    srv.release(100)
    assert srv.held == 0 and srv.held_peak == 100
    with pytest.raises(ValueError):
        srv.reserve(-1)
