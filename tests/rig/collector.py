"""A minimal asyncio UDP HEP collector: records every datagram with its arrival order and time.

It does not decode anything (the tests do that with ``bridge.hep.decode_hep``), so what it keeps
is exactly what arrived on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.rig.procs import LOCALHOST


@dataclass(frozen=True)
class Datagram:
    """One received datagram: arrival index (0-based), monotonic and wall-clock arrival times."""

    seq: int
    monotonic: float
    wall: float
    source: tuple[str, int]
    data: bytes


@dataclass
class HepCollector(asyncio.DatagramProtocol):
    """Records datagrams in arrival order; ``port`` is set once bound."""

    host: str = LOCALHOST
    port: int = 0
    packets: list[Datagram] = field(default_factory=list)
    _transport: asyncio.DatagramTransport | None = field(default=None, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    # asyncio.DatagramProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(
            Datagram(len(self.packets), time.monotonic(), time.time(), addr[:2], bytes(data))
        )
        self._changed.set()

    def error_received(self, exc: Exception) -> None:  # pragma: no cover - nothing to do
        pass

    @property
    def raw(self) -> list[bytes]:
        return [p.data for p in self.packets]

    def clear(self) -> None:
        self.packets.clear()

    async def wait_for(
        self, predicate: Callable[[list[Datagram]], bool], time_limit: float
    ) -> list[Datagram]:
        """Wait until ``predicate(packets)`` holds; raise TimeoutError after ``time_limit`` s."""
        async with asyncio.timeout(time_limit):
            while not predicate(self.packets):
                self._changed.clear()
                await self._changed.wait()
        return self.packets

    async def settle(self, quiet: float = 0.3, time_limit: float = 5.0) -> list[Datagram]:
        """Wait until no datagram has arrived for ``quiet`` seconds (at most ``time_limit``)."""
        deadline = time.monotonic() + time_limit
        while time.monotonic() < deadline:
            last = self.packets[-1].monotonic if self.packets else 0.0
            idle = time.monotonic() - last
            if idle >= quiet:
                break
            await asyncio.sleep(quiet - idle)
        return self.packets

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


@asynccontextmanager
async def running_collector(host: str = LOCALHOST, port: int = 0) -> AsyncIterator[HepCollector]:
    """A collector bound to host:port (0 = a free port), closed on exit."""
    loop = asyncio.get_running_loop()
    collector = HepCollector(host)
    transport, _ = await loop.create_datagram_endpoint(lambda: collector, local_addr=(host, port))
    collector.port = transport.get_extra_info("sockname")[1]
    try:
        yield collector
    finally:
        collector.close()
        await asyncio.sleep(0)  # let the transport finish closing
