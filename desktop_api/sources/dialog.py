"""Wiring of `[[sources.dialog]]`: the dialog-state client, its phones, health and metrics.

The path of one NOTIFY: `phone_drivers/dialog/client.py` (socket, subscriptions) →
`bridge/dialog/lines.py` → `desktop_api/sources/pump.py` → `desktop_api/service/evidence.py` →
`bridge/session/phone.py`. docs/dialog-source.md says what this source can and cannot prove.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.model import Agent
from bridge.uris import phone_key
from desktop_api.config import parse_listen
from desktop_api.sources.pump import EvidencePump
from phone_drivers.dialog import DialogClient

__all__ = ["DialogSource", "collect"]


class DialogSource:
    """One `[[sources.dialog]]`: SUBSCRIBE to each agent's line at the PBX."""

    kind = "dialog"

    def __init__(self, i: int, entry: dict[str, Any], pump: EvidencePump) -> None:
        self.name: str = entry.get("name", f"dialog-{i}")
        self.account: str | None = entry.get("account")
        pbx = parse_listen(entry["pbx"], f"sources.dialog[{i}].pbx")
        listen = parse_listen(entry.get("listen", "0.0.0.0:0"), f"sources.dialog[{i}].listen")
        self.client = DialogClient(
            self.name,
            pbx,
            listen,
            entry["username"],
            entry["password"],
            pump.putter(self.account),
            domain=entry.get("domain") or None,
            expires=entry.get("expires", 600),
        )
        extensions = entry.get("extensions")
        # None: every agent's extension
        self.extensions: list[str] | None = list(extensions) if extensions else None

    def health(self) -> dict[str, Any]:
        """What /healthz shows, read at request time."""
        return self.client.health()

    def sync_phones(self, agents: Iterable[Agent]) -> None:
        """Watch the user part of each agent's `sip_uri` (or the configured extensions)."""
        by_ext: dict[str, str] = {}
        for agent in agents:
            user = phone_key(agent.phone.sip_uri).rpartition("@")[0]
            if user:
                by_ext.setdefault(user, agent.phone.sip_uri)
        if self.extensions is None:
            self.client.set_phones(by_ext)
        else:
            domain = self.client.domain
            self.client.set_phones({e: by_ext.get(e, f"sip:{e}@{domain}") for e in self.extensions})

    async def start(self) -> None:
        """Bind the socket and start subscribing."""
        await self.client.start()

    async def close(self) -> None:
        """Unsubscribe and close."""
        await self.client.close()


def collect(sources: list[DialogSource]) -> Iterator[Metric]:
    """Prometheus families of the dialog sources."""
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
    for s in sources:
        for counter, n in s.client.stats.as_dict().items():
            counters.add_metric([s.name, counter], n)
        subscribed.add_metric([s.name], s.client.subscribed)
        watched.add_metric([s.name], len(s.client.watched))
    yield counters
    yield subscribed
    yield watched
