"""The one ordered queue of phone evidence: every source puts, one task applies.

Sources are synchronous and never await per packet; what they conclude (`PhoneEvent`s, rare next
to the messages they read) is queued here and applied one at a time, so evidence about a call
reaches the state machine in the order it was seen, whichever source saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridge.evidence import PhoneEvent

log = structlog.get_logger("transfer_bridge.sources")
QUEUE_LIMIT = 100_000

Apply = Callable[[PhoneEvent], Awaitable[object]]


def _owned(events: list[PhoneEvent], account_id: str | None) -> list[PhoneEvent]:
    if account_id is None:
        return events
    return [replace(e, account_id=account_id) for e in events]


class EvidencePump:
    """A FIFO of phone events from every source, applied one at a time by :meth:`run`."""

    def __init__(self, apply: Apply, limit: int = QUEUE_LIMIT) -> None:
        self._apply = apply
        # Each item: an event, and the future of a caller waiting for it to be applied.
        self.queue: asyncio.Queue[tuple[PhoneEvent, asyncio.Future[None] | None]] = asyncio.Queue(
            limit
        )
        self.dropped = 0
        self.failed = 0

    def put(self, events: list[PhoneEvent], account_id: str | None = None) -> None:
        """Queue events without waiting; a full queue is counted and logged, not hidden.

        `account_id`: the account that owns the source (its events reach that account only).
        """
        for event in _owned(events, account_id):
            self._put(event, None)

    def putter(self, account_id: str | None) -> Callable[[list[PhoneEvent]], None]:
        """`put` for one source, stamping its account on each event."""
        return lambda events: self.put(events, account_id)

    async def submit(self, events: list[PhoneEvent], account_id: str | None = None) -> None:
        """Queue events behind everything already queued and wait until they are applied.

        For sources that answer their peer only once the evidence took effect (desk phones).
        """
        if not events:
            return
        events = _owned(events, account_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for event in events[:-1]:
            self._put(event, None)
        if self._put(events[-1], done):
            await done

    def _put(self, event: PhoneEvent, done: asyncio.Future[None] | None) -> bool:
        try:
            self.queue.put_nowait((event, done))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("evidence_queue_full", phone=event.phone, call_id=event.call_id)
            return False
        return True

    async def run(self) -> None:
        """Apply queued events until cancelled."""
        while True:
            event, done = await self.queue.get()
            try:
                await self._apply(event)
            except Exception:
                self.failed += 1
                log.exception("evidence_failed", phone=event.phone, call_id=event.call_id)
            finally:
                self.queue.task_done()
                if done is not None and not done.done():
                    done.set_result(None)

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait (bounded) until everything queued so far is applied (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), seconds)

    def collect(self) -> Iterator[Metric]:
        """The queue's Prometheus families."""
        queue = GaugeMetricFamily(
            "transfer_bridge_evidence_queue", "Phone events waiting to be applied"
        )
        queue.add_metric([], self.queue.qsize())
        yield queue
        lost = CounterMetricFamily(
            "transfer_bridge_evidence_lost",
            "Phone events lost (queue full or failed)",
            labels=["reason"],
        )
        lost.add_metric(["queue_full"], self.dropped)
        lost.add_metric(["failed"], self.failed)
        yield lost
