"""A Service's address for tests without kube-proxy: a loopback port that passes each TCP connection through to one
of its backends (127.0.0.1 ports), round robin, skipping a backend that refuses the connection (as a killed pod's
endpoint leaves the Service); when none accepts, the connection is closed. Before `forwarding` starts, the port
refuses connections, as a server that has not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@dataclass
class ServiceForwarder:
    """Round robin over `backends` (ports on 127.0.0.1); counts the connections each got."""

    backends: list[int]
    connections: dict[int, int] = field(default_factory=dict)
    _next: int = 0
    _live: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._live.add(task)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:  # the forwarder stops: end the connection quietly
            writer.close()
        finally:
            self._live.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(self.backends)
        for i in range(n):
            port = self.backends[(self._next + i) % n]
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self._next = (self._next + i + 1) % n
            self.connections[port] = self.connections.get(port, 0) + 1
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
            return
        writer.close()

    async def close(self) -> None:
        """End every forwarded connection."""
        live = list(self._live)
        for t in live:
            t.cancel()
        await asyncio.gather(*live, return_exceptions=True)


@contextlib.asynccontextmanager
async def forwarding(port: int, backends: list[int]) -> AsyncIterator[ServiceForwarder]:
    """127.0.0.1:port forwards to `backends` until the block ends."""
    fwd = ServiceForwarder(list(backends))
    server = await asyncio.start_server(fwd.handle, "127.0.0.1", port)
    try:
        yield fwd
    finally:
        server.close()
        await fwd.close()
        await server.wait_closed()
