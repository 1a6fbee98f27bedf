"""Wiring of `[[sources.dialog]]`: the dialog-state client, its phones, health and metrics.

Kept apart from `desktop_api/sources.py` (which starts every kind of source) so that each stays
small; see docs/dialog-source.md for what this source can and cannot prove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.correlation import phone_key
from bridge.evidence import PhoneEvent
from desktop_api.config import parse_listen
from desktop_api.service import BridgeService
from phone_drivers.dialog import DialogClient

__all__ = ["DialogMetrics", "DialogSource", "dialog_source", "sync_dialog_phones"]


@dataclass
class DialogSource:
    """One `[[sources.dialog]]`."""

    name: str
    client: DialogClient
    extensions: list[str] | None  # None: every agent's extension

    def health(self) -> dict[str, Any]:
        """What /healthz shows, read at request time."""
        return self.client.health()


def dialog_source(
    i: int, entry: dict[str, Any], put: Callable[[list[PhoneEvent]], None]
) -> DialogSource:
    """Build (not start) the client of one validated `[[sources.dialog]]` entry."""
    name = entry.get("name", f"dialog-{i}")
    pbx = parse_listen(entry["pbx"], f"sources.dialog[{i}].pbx")
    listen = parse_listen(entry.get("listen", "0.0.0.0:0"), f"sources.dialog[{i}].listen")
    client = DialogClient(
        name,
        pbx,
        listen,
        entry["username"],
        entry["password"],
        put,
        domain=entry.get("domain") or None,
        expires=entry.get("expires", 600),
    )
    extensions = entry.get("extensions")
    return DialogSource(name, client, list(extensions) if extensions else None)


def sync_dialog_phones(service: BridgeService, sources: list[DialogSource]) -> None:
    """Give each source the extensions to watch: the user part of each agent's `sip_uri`."""
    by_ext: dict[str, str] = {}
    for agent in service.agents.values():
        user = phone_key(agent.phone.sip_uri).rpartition("@")[0]
        if user:
            by_ext.setdefault(user, agent.phone.sip_uri)
    for source in sources:
        if source.extensions is None:
            source.client.set_phones(by_ext)
        else:
            source.client.set_phones(
                {e: by_ext.get(e, f"sip:{e}@{source.client.domain}") for e in source.extensions}
            )


class DialogMetrics(Collector):
    """Counters of the dialog sources, read when /metrics is scraped."""

    def __init__(self, sources: list[DialogSource]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        """Prometheus families."""
        counters = CounterMetricFamily(
            "transfer_bridge_dialog",
            "Dialog-state source counters (datagrams, notifies, malformed, stale, ...)",
            labels=["source", "counter"],
        )
        subscribed = GaugeMetricFamily(
            "transfer_bridge_dialog_subscribed",
            "Lines with a live dialog subscription",
            labels=["source"],
        )
        watched = GaugeMetricFamily(
            "transfer_bridge_dialog_lines", "Lines the source subscribes to", labels=["source"]
        )
        for s in self.sources:
            for counter, n in s.client.stats.as_dict().items():
                counters.add_metric([s.name, counter], n)
            subscribed.add_metric([s.name], s.client.subscribed)
            watched.add_metric([s.name], len(s.client.watched))
        yield counters
        yield subscribed
        yield watched
