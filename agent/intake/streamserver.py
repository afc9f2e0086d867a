"""Connection handling shared by the network intakes (the ICAP service and the HTTP proxy).

Owns: accepting connections up to a limit (a busy answer beyond it), per-client bounds, the
server-wide budget for buffered bytes, tracking connections so that ``close()`` drops every one,
closing sockets gently, and the fail-open scan in the pool. Must not touch any protocol: a subclass
answers ``busy_response()`` and ``serve_connection()``, and may override ``refuse_client()`` and
``make_room()``.

Optional limits (read with getattr, so an intake whose limits lack them keeps the old behaviour):
``max_connections_per_client`` (0: unbounded) and ``pressure_fraction`` (share of max_connections
beyond which ``under_pressure`` is true and subclasses shorten their waits).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Optional

from agent.intake import Decision, inspect_fail_open


async def linger(reader, writer, seconds: float = 0.2) -> None:
    """Half-close and swallow what the client already sent, so closing does not reset the answer away."""
    try:
        await asyncio.wait_for(writer.drain(), seconds)
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not await asyncio.wait_for(reader.read(65536), left):
                return
    except (Exception, asyncio.TimeoutError):
        pass


async def relay(read, dst, idle_timeout: float) -> None:
    """Copy ``await read()`` pieces to ``dst`` until EOF, an error or ``idle_timeout`` without progress,
    then half-close ``dst``: one direction of a tunnel (CONNECT, the TLS splice). Never raises."""
    try:
        while True:
            data = await read()
            if not data:
                break
            dst.write(data)
            await asyncio.wait_for(dst.drain(), idle_timeout)
    except (Exception, asyncio.CancelledError):
        pass
    finally:
        try:
            dst.write_eof()
        except (OSError, RuntimeError, AttributeError):
            pass


async def close_writer(writer) -> None:
    """Close a connection, waiting a little for the transport, never raising."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (Exception, asyncio.CancelledError):
        pass


def peer_ip(writer) -> Optional[str]:
    """The peer's IP address as text, or None (Unix sockets, closed transports)."""
    try:
        peer = writer.get_extra_info("peername")
    except Exception:
        return None
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return None


class StreamIntakeServer:
    """Base of the asyncio intake servers; subclasses call ``_init_intake`` from their constructor."""

    log = logging.getLogger("gatewatch.intake")

    def _init_intake(self, inspector, limits, on_block, block_page, executor, counters) -> None:
        """State every intake server keeps: ``limits`` needs max_connections and scan_timeout."""
        from agent.intake.blockpage import BlockPage
        self.inspector = inspector
        self.limits = limits
        self.on_block = on_block
        self.block_page = block_page or BlockPage()
        self._executor = executor
        self._own_executor = executor is None
        self._server = None
        self._active = 0
        self._tasks: set = set()
        self._per_client: collections.Counter = collections.Counter()
        self.held = 0  # image bytes held for scans across all connections (bounded by max_held_bytes)
        self.held_peak = 0
        self.stats = collections.Counter({k: 0 for k in counters})

    @property
    def port(self) -> int:
        """The TCP port we listen on (useful after ``start(host, 0)``)."""
        return self._server.sockets[0].getsockname()[1]

    @property
    def under_pressure(self) -> bool:
        """Whether connections fill ``pressure_fraction`` (default 3/4) of max_connections."""
        fraction = getattr(self.limits, "pressure_fraction", 0.75)
        return self._active >= max(1, int(self.limits.max_connections * fraction))

    def connections_of(self, ip: Optional[str]) -> int:
        """Connections being served now for client address ``ip``."""
        return self._per_client.get(ip, 0)

    # -- the server-wide budget for buffered bytes --

    def reserve(self, n: int) -> bool:
        """Reserve ``n`` bytes of the max_held_bytes budget before buffering them; False if over it.

        A caller that got True owns the bytes until it calls ``release(n)``. Without a
        max_held_bytes limit every reservation succeeds (and is still counted in ``held``).
        """
        budget = getattr(self.limits, "max_held_bytes", None)
        if n < 0:
            raise ValueError("negative reservation")
        if budget is not None and self.held + n > budget:
            return False
        self.held += n
        if self.held > self.held_peak:
            self.held_peak = self.held
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` reserved bytes."""
        self.held -= n

    # -- hooks for subclasses --

    def busy_response(self) -> bytes:
        """The bytes sent to a connection beyond ``max_connections`` before it is closed."""
        raise NotImplementedError

    def refuse_client(self, ip: Optional[str]) -> Optional[bytes]:
        """Bytes to send a client this intake must not serve at all (then closed); None serves it."""
        return None

    async def make_room(self) -> bool:
        """Called when every connection slot is taken: free one (e.g. an idle keep-alive) and say so."""
        return False

    async def serve_connection(self, reader, writer) -> None:
        """Serve one accepted connection until it is done."""
        raise NotImplementedError

    async def inspect(self, body: bytes, content_type: Optional[str], url: Optional[str]) -> Optional[Decision]:
        """Run the inspector in the pool; None means fail-open (error or timeout, counted and logged)."""
        return await inspect_fail_open(self.inspector, self._executor, body, content_type, url,
                                       timeout=self.limits.scan_timeout, stats=self.stats,
                                       on_block=self.on_block, log=self.log)

    async def close(self) -> None:
        """Stop listening, drop connections, stop the scan pool."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _turn_away(self, reader, writer, data: bytes) -> None:
        try:
            writer.write(data)
        except Exception:
            pass
        await linger(reader, writer)
        await close_writer(writer)

    async def _accept(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            ip = peer_ip(writer)
            refusal = self.refuse_client(ip)
            if refusal is not None:
                self.stats["refused_clients"] += 1
                await self._turn_away(reader, writer, refusal)
                return
            per_client = getattr(self.limits, "max_connections_per_client", 0) or 0
            if per_client and self._per_client[ip] >= per_client:
                self.stats["rejected"] += 1
                self.stats["rejected_per_client"] += 1
                await self._turn_away(reader, writer, self.busy_response())
                return
            if self._active >= self.limits.max_connections and not await self.make_room():
                self.stats["rejected"] += 1
                await self._turn_away(reader, writer, self.busy_response())
                return
            self._active += 1
            self._per_client[ip] += 1
            self.stats["connections"] += 1
            try:
                await self.serve_connection(reader, writer)
            finally:
                self._active -= 1
                self._per_client[ip] -= 1
                if self._per_client[ip] <= 0:
                    del self._per_client[ip]
                await close_writer(writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
