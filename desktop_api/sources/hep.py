"""Wiring of `[[sources.hep]]`: a UDP listener (phone_drivers.hep) feeding a SIP tracker
(bridge.hep.tracker), whose evidence goes to the ordered queue.

The path of one captured message: `phone_drivers/hep/listener.py` (socket, HEP decode) →
this module's sink → `bridge/hep/tracker.py` (parse, de-dup, dialogs, detector) →
`desktop_api/sources/pump.py` → `desktop_api/service/evidence.py` → `bridge/session/phone.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.hep.directory import PhoneDirectory
from bridge.hep.sides import Hop
from bridge.hep.tracker import SipTracker
from bridge.model import Agent
from desktop_api.config import parse_listen
from desktop_api.sources.pump import EvidencePump
from phone_drivers.hep import HepListener

log = structlog.get_logger("transfer_bridge.sources")
EXPIRY_PERIOD = 1.0  # seconds between expiry checks


class HepSource:
    """One `[[sources.hep]]`: a UDP listener and the SIP tracker behind it."""

    kind = "hep"

    def __init__(self, i: int, entry: dict[str, Any], pump: EvidencePump) -> None:
        self.name: str = entry.get("name", f"hep-{i}")
        self.account: str | None = entry.get("account")
        put = pump.putter(self.account)
        self.host, self.port = parse_listen(
            entry.get("listen", "127.0.0.1:9060"), f"sources.hep[{i}]"
        )
        directory = PhoneDirectory(match_user=bool(entry.get("match_user", False)))
        self.tracker = tracker = SipTracker(directory, source=self.name)

        def sink(payload: bytes, at: float, src: Hop | None, dst: Hop | None) -> None:
            # `at` is the capture host's time (evidence stamps only); the tracker's windows
            # and expiry run on this process's monotonic clock. The packet's addresses tell
            # the phone's messages from its PBX's.
            events = tracker.feed_bytes(payload, at, time.monotonic(), src, dst)
            if events:
                put(events)

        self.listener = HepListener(
            self.name, self.host, self.port, entry.get("password"), sink, clock=time.time
        )
        self._health: dict[str, Any] = {}
        self._expiry: asyncio.Task[None] | None = None

    def health(self) -> dict[str, Any]:
        """What /healthz shows: the listener's state, and while it listens the datagrams the
        kernel dropped (`kernel_drops`) and what the SIP tracker holds and evicted."""
        if self._health.get("status") != "listening":
            return self._health
        stats = self.tracker.stats
        return {
            **self._health,
            "kernel_drops": self.listener.kernel_drops(),
            "dialogs": stats.dialogs,
            "evicted": stats.evicted,
            "oversized": stats.oversized,
        }

    def sync_phones(self, agents: Iterable[Agent]) -> None:
        """Watch exactly these agents' phones."""
        self.tracker.directory.replace([agent.phone.sip_uri for agent in agents])

    async def start(self) -> None:
        """Bind the socket; a port that cannot be bound is reported, never fatal."""
        try:
            self.listener.start()
            host, port = self.listener.address[:2]
            self._health = {"kind": "hep", "status": "listening", "listen": f"{host}:{port}"}
        except OSError as exc:
            self._health = {"kind": "hep", "status": "failing", "error": str(exc)}
            log.error("hep_listen_failed", source=self.name, error=str(exc))
            return
        self._expiry = asyncio.create_task(self._expire(), name=f"sip-expiry-{self.name}")

    async def close(self) -> None:
        """Close the socket and stop the expiry task."""
        self.listener.close()
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)

    async def _expire(self) -> None:
        """Run the tracker's expiry when its deadline passes (the monotonic clock it is fed)."""
        while True:
            await asyncio.sleep(EXPIRY_PERIOD)
            now = time.monotonic()
            deadline = self.tracker.next_deadline()
            if deadline is not None and deadline <= now:
                self.tracker.expire(now)


def collect(sources: list[HepSource]) -> Iterator[Metric]:
    """Prometheus families of the HEP sources."""
    packets = CounterMetricFamily(
        "transfer_bridge_hep_packets",
        "HEP packets received, by outcome",
        labels=["source", "outcome"],
    )
    sip = CounterMetricFamily(
        "transfer_bridge_sip_messages",
        "SIP messages through the tracker, by outcome",
        labels=["source", "outcome"],
    )
    dialogs = GaugeMetricFamily(
        "transfer_bridge_sip_dialogs", "Dialogs tracked now", labels=["source"]
    )
    entries = GaugeMetricFamily(
        "transfer_bridge_hep_table_entries",
        "Entries in each bounded table of the HEP pipeline",
        labels=["source", "table"],
    )
    evictions = CounterMetricFamily(
        "transfer_bridge_hep_table_evictions",
        "Entries dropped because a table reached its cap",
        labels=["source", "table"],
    )
    for s in sources:
        st = s.listener.stats
        packets.add_metric([s.name, "sip"], st.sip)
        for reason, n in st.dropped.items():
            packets.add_metric([s.name, reason], n)
        packets.add_metric([s.name, "kernel_dropped"], s.listener.kernel_drops())
        ts = s.tracker.stats
        for outcome in (
            "messages",
            "duplicates",
            "unmatched",
            "dropped",
            "oversized",
            "events",
            "evicted",
        ):
            sip.add_metric([s.name, outcome], getattr(ts, outcome))
        dialogs.add_metric([s.name], ts.dialogs)
        for table, (size, evicted) in s.tracker.tables().items():
            entries.add_metric([s.name, table], size)
            evictions.add_metric([s.name, table], evicted)
    yield packets
    yield sip
    yield dialogs
    yield entries
    yield evictions
