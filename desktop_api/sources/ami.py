"""Wiring of `[[sources.ami]]`: an AMI connection (phone_drivers.ami) feeding the call tracker
(bridge.ami.calls), whose evidence goes to the ordered queue.

The path of one AMI event: `phone_drivers/ami/client.py` (socket, framing) → this module's sink
→ `bridge/ami/calls.py` → `desktop_api/sources/pump.py` → `desktop_api/service/evidence.py` →
`bridge/session/phone.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.ami import AmiEvent
from bridge.ami.calls import CALL_ID_VARIABLE, AmiCallTracker
from bridge.ami.phones import AmiPhones
from bridge.model import Agent
from bridge.timefmt import rfc3339
from desktop_api.sources.pump import EvidencePump
from phone_drivers.ami import AmiClient

log = structlog.get_logger("transfer_bridge.sources")


class AmiSource:
    """One `[[sources.ami]]`: a logged-in AMI connection and the call tracker behind it."""

    kind = "ami"

    def __init__(self, i: int, entry: dict[str, Any], pump: EvidencePump) -> None:
        self.name: str = entry.get("name", f"ami-{i}")
        self.account: str | None = entry.get("account")
        self._put = put = pump.putter(self.account)
        self.phones = AmiPhones()
        variable = entry.get("call_id_variable", CALL_ID_VARIABLE) or None
        self.tracker = tracker = AmiCallTracker(self.name, self.phones, call_id_variable=variable)

        def sink(event: AmiEvent, received_at: float) -> None:
            events = tracker.feed(event, received_at)
            if events:
                put(events)
            if event.name == "CoreShowChannelsComplete":  # the calls already up are known
                log.info("ami_resynced", source=self.name, legs=tracker.stats.legs)

        self.client = AmiClient(
            self.name,
            entry.get("host", "127.0.0.1"),
            entry.get("port", 5038),
            entry["username"],
            entry["secret"],
            sink,
            on_connected=self._connected,
        )

    def health(self) -> dict[str, Any]:
        """What /healthz shows, read at request time (the connection comes and goes)."""
        health = dict(self.client.health)
        if isinstance(health.get("since"), int | float):
            health["since"] = rfc3339(health["since"])
        return {k: v for k, v in health.items() if v is not None}

    def sync_phones(self, agents: Iterable[Agent]) -> None:
        """Watch exactly these agents' phones (by SIP URI and AMI endpoint)."""
        self.phones.replace([(a.phone.sip_uri, a.phone.ami_endpoint) for a in agents])

    async def start(self) -> None:
        """Connect in the background (reconnecting with back-off)."""
        self.client.start()

    async def close(self) -> None:
        """Log off and close."""
        await self.client.close()

    def _connected(self) -> Awaitable[None]:
        # Events missed while disconnected are gone: start from a clean slate rather than
        # pair a call's end with a start that was never seen, then ask Asterisk for the calls
        # already up (a consult under way when the bridge restarted, say).
        self.tracker.reset(resync=True)
        return self._resync()

    async def _resync(self) -> None:
        try:
            response = await self.client.action("CoreShowChannels")
        except (ConnectionError, TimeoutError) as exc:
            log.warning("ami_resync_failed", source=self.name, error=str(exc))
            self._put(self.tracker.resync_failed())
            return
        if not response.ok:
            log.warning("ami_resync_refused", source=self.name, message=response.get("Message"))
            self._put(self.tracker.resync_failed())


def collect(sources: list[AmiSource]) -> Iterator[Metric]:
    """Prometheus families of the AMI sources (none when no AMI source is configured)."""
    if not sources:
        return
    ami = CounterMetricFamily(
        "transfer_bridge_ami", "AMI connection counters", labels=["source", "counter"]
    )
    up = GaugeMetricFamily(
        "transfer_bridge_ami_connected", "1 while logged in to the AMI", labels=["source"]
    )
    legs = GaugeMetricFamily(
        "transfer_bridge_ami_calls", "Channels of watched phones tracked now", labels=["source"]
    )
    for s in sources:
        for counter, n in s.client.stats.as_dict().items():
            ami.add_metric([s.name, counter], n)
        ami.add_metric([s.name, "evidence"], s.tracker.stats.evidence)
        up.add_metric([s.name], 1 if s.client.connected else 0)
        legs.add_metric([s.name], s.tracker.stats.legs)
    yield ami
    yield up
    yield legs
