"""Starts the configured phone sources and pumps their evidence into the service, in order.

Sources are synchronous and never await per packet; what they conclude (`PhoneEvent`s, rare next
to the messages they read) is queued here and applied by one task, so evidence about a call
reaches the state machine in the order it was seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.ami import AmiEvent
from bridge.ami.calls import CALL_ID_VARIABLE, AmiCallTracker
from bridge.ami.phones import AmiPhones
from bridge.evidence import PhoneEvent
from bridge.phone_directory import PhoneDirectory
from bridge.transfer_detector import SipTracker, rfc3339
from desktop_api.config import parse_listen
from desktop_api.dialog_source import DialogMetrics, dialog_source, sync_dialog_phones
from desktop_api.service import BridgeService
from phone_drivers.ami import AmiClient
from phone_drivers.hep import HepListener

log = structlog.get_logger("transfer_bridge.sources")
QUEUE_LIMIT = 100_000


class EvidencePump:
    """A FIFO of phone events from every source, applied one at a time."""

    def __init__(self, service: BridgeService) -> None:
        self.service = service
        self.queue: asyncio.Queue[PhoneEvent] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.failed = 0

    def put(self, events: list[PhoneEvent]) -> None:
        """Queue events without waiting; a full queue is counted and logged, not hidden."""
        for event in events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("evidence_queue_full", phone=event.phone, call_id=event.call_id)

    async def run(self) -> None:
        """Apply queued events until cancelled."""
        while True:
            event = await self.queue.get()
            try:
                await self.service.ingest(event)
            except Exception:
                self.failed += 1
                log.exception("evidence_failed", phone=event.phone, call_id=event.call_id)
            finally:
                self.queue.task_done()

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait (bounded) until everything queued so far is applied (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), seconds)


@dataclass
class HepSource:
    """One `[[sources.hep]]`: a UDP listener and the SIP tracker behind it."""

    name: str
    listener: HepListener
    tracker: SipTracker
    health: dict[str, Any] = field(default_factory=dict)


@dataclass
class AmiSource:
    """One `[[sources.ami]]`: a logged-in AMI connection and the call tracker behind it."""

    name: str
    client: AmiClient
    tracker: AmiCallTracker
    phones: AmiPhones

    def health(self) -> dict[str, Any]:
        """What /healthz shows, read at request time (the connection comes and goes)."""
        health = dict(self.client.health)
        if isinstance(health.get("since"), int | float):
            health["since"] = rfc3339(health["since"])
        return {k: v for k, v in health.items() if v is not None}


class SourceMetrics(Collector):
    """Counters of the sources, read when /metrics is scraped."""

    def __init__(
        self, sources: list[HepSource], pump: EvidencePump, ami: list[AmiSource] | None = None
    ) -> None:
        self.sources = sources
        self.pump = pump
        self.ami = ami or []

    def collect(self) -> Iterator[Metric]:
        """Prometheus families."""
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
        for s in self.sources:
            st = s.listener.stats
            packets.add_metric([s.name, "sip"], st.sip)
            for reason, n in st.dropped.items():
                packets.add_metric([s.name, reason], n)
            ts = s.tracker.stats
            for outcome in ("messages", "duplicates", "unmatched", "dropped", "events"):
                sip.add_metric([s.name, outcome], getattr(ts, outcome))
            dialogs.add_metric([s.name], ts.dialogs)
        yield packets
        yield sip
        yield dialogs
        yield from self._ami()
        queue = GaugeMetricFamily(
            "transfer_bridge_evidence_queue", "Phone events waiting to be applied"
        )
        queue.add_metric([], self.pump.queue.qsize())
        yield queue
        lost = CounterMetricFamily(
            "transfer_bridge_evidence_lost",
            "Phone events lost (queue full or failed)",
            labels=["reason"],
        )
        lost.add_metric(["queue_full"], self.pump.dropped)
        lost.add_metric(["failed"], self.pump.failed)
        yield lost

    def _ami(self) -> Iterator[Metric]:
        if not self.ami:
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
        for s in self.ami:
            for counter, n in s.client.stats.as_dict().items():
                ami.add_metric([s.name, counter], n)
            ami.add_metric([s.name, "evidence"], s.tracker.stats.evidence)
            up.add_metric([s.name], 1 if s.client.connected else 0)
            legs.add_metric([s.name], s.tracker.stats.legs)
        yield ami
        yield up
        yield legs


def _sync_phones(
    service: BridgeService, directories: list[PhoneDirectory], ami: list[AmiPhones]
) -> None:
    phones = [agent.phone.sip_uri for agent in service.agents.values()]
    for directory in directories:
        directory.replace(phones)
    endpoints = [
        (agent.phone.sip_uri, agent.phone.ami_endpoint) for agent in service.agents.values()
    ]
    for table in ami:
        table.replace(endpoints)


def _ami_source(i: int, entry: dict[str, Any], pump: EvidencePump) -> AmiSource:
    name = entry.get("name", f"ami-{i}")
    phones = AmiPhones()
    variable = entry.get("call_id_variable", CALL_ID_VARIABLE) or None
    tracker = AmiCallTracker(name, phones, call_id_variable=variable)

    def sink(event: AmiEvent, received_at: float) -> None:
        events = tracker.feed(event, received_at)
        if events:
            pump.put(events)

    def connected() -> Awaitable[None]:
        # Events missed while disconnected are gone: start from a clean slate rather than
        # pair a call's end with a start that was never seen, then ask Asterisk for the calls
        # already up (a consult under way when the bridge restarted, say).
        tracker.reset(resync=True)
        return resync()

    async def resync() -> None:
        try:
            response = await client.action("CoreShowChannels")
        except (ConnectionError, TimeoutError) as exc:
            log.warning("ami_resync_failed", source=name, error=str(exc))
            pump.put(tracker.resync_failed())
            return
        if not response.ok:
            log.warning("ami_resync_refused", source=name, message=response.get("Message"))
            pump.put(tracker.resync_failed())

    client = AmiClient(
        name,
        entry.get("host", "127.0.0.1"),
        entry.get("port", 5038),
        entry["username"],
        entry["secret"],
        sink,
        on_connected=connected,
    )
    return AmiSource(name, client, tracker, phones)


async def _expire(sources: list[HepSource]) -> None:
    """Run each tracker's expiry when its deadline passes (capture time ~ wall time)."""
    while True:
        await asyncio.sleep(1.0)
        now = time.time()
        for s in sources:
            deadline = s.tracker.next_deadline()
            if deadline is not None and deadline <= now:
                s.tracker.expire(now)


@contextlib.asynccontextmanager
async def running_sources(
    service: BridgeService,
    config: dict[str, list[dict[str, Any]]],
    health: dict[str, Any],
    registry: Any,
) -> AsyncIterator[list[HepSource]]:
    """Start every configured source; a source that cannot start is reported, never fatal."""
    pump = EvidencePump(service)
    sources: list[HepSource] = []
    for i, entry in enumerate(config.get("hep", [])):
        name = entry.get("name", f"hep-{i}")
        host, port = parse_listen(entry.get("listen", "127.0.0.1:9060"), f"sources.hep[{i}]")
        directory = PhoneDirectory(match_user=bool(entry.get("match_user", False)))
        tracker = SipTracker(directory, source=name)

        def sink(payload: bytes, at: float, tracker: SipTracker = tracker) -> None:
            events = tracker.feed_bytes(payload, at)
            if events:
                pump.put(events)

        listener = HepListener(name, host, port, entry.get("password"), sink, clock=time.time)
        source = HepSource(name, listener, tracker)
        try:
            listener.start()
            health[name] = {
                "kind": "hep",
                "status": "listening",
                "listen": f"{listener.address[0]}:{listener.address[1]}",
            }
        except OSError as exc:
            health[name] = {"kind": "hep", "status": "failing", "error": str(exc)}
            log.error("hep_listen_failed", source=name, error=str(exc))
        sources.append(source)
    ami_sources = [_ami_source(i, entry, pump) for i, entry in enumerate(config.get("ami", []))]
    for ami in ami_sources:
        health[ami.name] = ami.health
    dialogs = [dialog_source(i, e, pump.put) for i, e in enumerate(config.get("dialog", []))]
    for dialog in dialogs:
        health[dialog.name] = dialog.health
    directories = [s.tracker.directory for s in sources]
    tables = [a.phones for a in ami_sources]
    _sync_phones(service, directories, tables)
    service.on_agents_changed.append(lambda: _sync_phones(service, directories, tables))
    sync_dialog_phones(service, dialogs)
    service.on_agents_changed.append(lambda: sync_dialog_phones(service, dialogs))
    collector = SourceMetrics(sources, pump, ami_sources)
    registry.register(collector)
    dialog_metrics = DialogMetrics(dialogs)
    registry.register(dialog_metrics)
    tasks = [asyncio.create_task(pump.run(), name="evidence-pump")]
    for ami in ami_sources:
        ami.client.start()
    for dialog in dialogs:
        await dialog.client.start()
    if sources:
        tasks.append(asyncio.create_task(_expire(sources), name="sip-expiry"))
    service.evidence_pump = pump
    try:
        yield sources
    finally:
        for s in sources:
            s.listener.close()
        for ami in ami_sources:
            await ami.client.close()
        for dialog in dialogs:
            await dialog.client.close()
        await pump.drain()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        registry.unregister(collector)
        registry.unregister(dialog_metrics)
