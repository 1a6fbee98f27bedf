"""Wiring of desk phones (Yealink, Snom, Poly): the receivers' per-app state and counters.

Desk phones post their own events (`desktop_api/routes/deskphone.py`); each request's events are
turned into phone evidence by `bridge/deskphone/` and go through the same ordered queue as every
other source (`desktop_api/sources/pump.py`), so the route answers once they took effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.deskphone.events import DeviceCalls
from desktop_api.logs import RateLimited

__all__ = ["DeviceCollector", "DeviceHub"]


class DeviceCollector(Collector):
    """`transfer_bridge_deskphone_events{vendor, outcome}`, read when /metrics is scraped."""

    def __init__(self, counts: Counter[tuple[str, str]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        """One counter family."""
        family = CounterMetricFamily(
            "transfer_bridge_deskphone_events",
            "Desk-phone requests and events, by vendor and outcome",
            labels=["vendor", "outcome"],
        )
        for (vendor, outcome), n in sorted(self.counts.items()):
            family.add_metric([vendor, outcome], n)
        yield family


@dataclass
class DeviceHub:
    """Per-app state of the receivers: each device's call memory and the counters."""

    devices: dict[tuple[str, str], DeviceCalls] = field(default_factory=dict)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    refusal_log: RateLimited = field(default_factory=RateLimited)
