"""The phone sources of one bridge: started with the app, fed into one ordered evidence queue.

One module per source, the same name as its pure core in `bridge/` and its sockets in
`phone_drivers/`: `hep`, `ami`, `dialog`, `deskphone`. Each configured source is an object with
`name`, `health()`, `sync_phones(agents)`, `start()` and `close()`; what it concludes goes to
:class:`~desktop_api.sources.pump.EvidencePump`, which applies it in order.

On a PostgreSQL store several instances may run the same configuration: the sources that must
run once (AMI: one login per PBX; dialog-info: one subscriber per line) are *leased*
(`desktop_api/cluster/lease.py`): each runs only while its instance holds the lease
`<kind>:<name>`, and is stopped the moment the lease is lost. HEP sources are not leased (each
instance receives what is sent to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bridge.model import Agent
from desktop_api.cluster.lease import Lease, LeaseKeeper
from desktop_api.sources import ami, dialog, hep
from desktop_api.sources.pump import EvidencePump

__all__ = ["LEASED_KINDS", "RunningSources", "Source", "running_sources"]

LEASED_KINDS = ("ami", "dialog")  # sources that must run on one instance at a time


class Source(Protocol):
    """What every configured source offers the app."""

    kind: str  # "hep", "ami", "dialog"
    name: str
    account: str | None  # the account that owns the source; None: not tied to one

    def health(self) -> dict[str, Any]: ...
    def sync_phones(self, agents: Iterable[Agent]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


@dataclass(eq=False)  # a Collector is registered by identity
class RunningSources(Collector):
    """The configured sources of one app, by kind, and the queue they feed."""

    pump: EvidencePump
    hep: list[hep.HepSource] = field(default_factory=list)
    ami: list[ami.AmiSource] = field(default_factory=list)
    dialog: list[dialog.DialogSource] = field(default_factory=list)

    def all(self) -> list[Source]:
        """Every source, in configuration order per kind."""
        return [*self.hep, *self.ami, *self.dialog]

    def sync_phones(self, agents: Iterable[Agent]) -> None:
        """Tell every source which phones to watch (at start and whenever agents change)."""
        agents = list(agents)
        for source in self.all():
            # A source owned by an account watches that account's phones only.
            mine = [a for a in agents if source.account in (None, a.account_id)]
            source.sync_phones(mine)

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of every source and of the queue, read at scrape time."""
        yield from hep.collect(self.hep)
        yield from ami.collect(self.ami)
        yield from self.pump.collect()
        yield from dialog.collect(self.dialog)


@contextlib.asynccontextmanager
async def running_sources(
    config: dict[str, list[dict[str, Any]]],
    pump: EvidencePump,
    agents: Iterable[Agent],
    health: dict[str, Any],
    registry: Any,
    leases: LeaseKeeper | None = None,
) -> AsyncIterator[RunningSources]:
    """Start every configured source and the pump; a source that cannot start is reported in
    /healthz, never fatal. Each starts watching `agents`' phones; when agents change, call
    `RunningSources.sync_phones`. With `leases` (a PostgreSQL store), AMI and dialog-info
    sources start only while this instance holds their lease."""
    sources = RunningSources(
        pump,
        [hep.HepSource(i, e, pump) for i, e in enumerate(config.get("hep", []))],
        [ami.AmiSource(i, e, pump) for i, e in enumerate(config.get("ami", []))],
        [dialog.DialogSource(i, e, pump) for i, e in enumerate(config.get("dialog", []))],
    )
    leased: dict[str, Lease] = {}
    for source in sources.all():
        health[source.name] = source.health
        if leases is not None and source.kind in LEASED_KINDS:
            lease = leases.add(f"{source.kind}:{source.name}", source.start, source.close)
            leased[source.name] = lease
            health[source.name] = functools.partial(_leased_health, source, lease)
    sources.sync_phones(agents)
    registry.register(sources)
    runner = asyncio.create_task(pump.run(), name="evidence-pump")
    try:
        for source in sources.all():
            if source.name not in leased:
                await source.start()
        if leases is not None:
            leases.start()
        yield sources
    finally:
        if leases is not None:
            await leases.close()  # stops the sources it holds, then lets the leases go
        for source in sources.all():
            await source.close()  # idempotent: a leased source already stopped stays so
        await pump.drain()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        registry.unregister(sources)


def _leased_health(source: Source, lease: Lease) -> dict[str, Any]:
    """A leased source's health: its own while this instance holds the lease, else `standby`
    (the source is not running here; `/healthz`'s `cluster.leases` names the holder)."""
    if lease.held:
        return {**source.health(), "lease": "held"}
    own = source.health()
    health = {"kind": source.kind, "status": "standby", "lease": "standby"}
    if "address" in own:
        health["address"] = own["address"]
    return health
