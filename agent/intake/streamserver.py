"""Connection handling shared by the network intakes (the ICAP service and the HTTP proxy).

Owns: accepting connections up to a limit (a busy answer beyond it), tracking them so that
``close()`` drops every one, closing sockets gently, and the fail-open scan in the pool. Must not
touch any protocol: a subclass answers ``busy_response()`` and ``serve_connection()``.
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


async def close_writer(writer) -> None:
    """Close a connection, waiting a little for the transport, never raising."""
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (Exception, asyncio.CancelledError):
        pass


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
        self.held = 0  # image bytes held for scans across all connections (bounded by max_held_bytes)
        self.stats = collections.Counter({k: 0 for k in counters})

    @property
    def port(self) -> int:
        """The TCP port we listen on (useful after ``start(host, 0)``)."""
        return self._server.sockets[0].getsockname()[1]

    def busy_response(self) -> bytes:
        """The bytes sent to a connection beyond ``max_connections`` before it is closed."""
        raise NotImplementedError

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

    async def _accept(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self._active >= self.limits.max_connections:
                self.stats["rejected"] += 1
                writer.write(self.busy_response())
                await linger(reader, writer)
                await close_writer(writer)
                return
            self._active += 1
            self.stats["connections"] += 1
            try:
                await self.serve_connection(reader, writer)
            finally:
                self._active -= 1
                await close_writer(writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
