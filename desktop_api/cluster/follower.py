"""Keeps one instance in step with the others that share its PostgreSQL store.

The store is the truth; notifications only say where to look. Every session write commits a
`pg_notify('transfer_bridge_changes', '<account> <cursor>')` with it, and every change of
accounts, agents or tokens a `pg_notify('transfer_bridge_registry', '<account>')`. This module:

- LISTENs on its own connection; a notification for a cursor this instance has not passed on
  yet marks the account for a catch-up;
- every `[cluster] poll_interval` seconds compares each account's newest cursor in the store
  with its own (a notification is lost while the connection is down), and every
  `REGISTRY_EVERY` seconds reloads the registry anyway;
- catches an account up by reading the stored feed after its last cursor: each change goes
  into the open-session cache and, in cursor order (`FeedOrder`), to the long-polls and SSE
  streams waiting here; a session another instance opened is offered to this instance's
  sources for binding (they may be the ones that see the agent's phone).

On SQLite (one instance per file) only the catch-up runs, and only if a change of this
instance reached the feed out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import psycopg
import structlog

from bridge.model import Binding
from bridge.store import StoreUnavailable
from bridge.untrusted import ascii_uint
from desktop_api.storage import redacted_url
from desktop_api.storage.queries import CHANGES_CHANNEL, REGISTRY_CHANNEL

if TYPE_CHECKING:
    from desktop_api.metrics import Metrics
    from desktop_api.service.evidence import EvidenceRouter
    from desktop_api.service.open_sessions import AgentKey
    from desktop_api.service.registry import Registry
    from desktop_api.service.runner import StoreRunner
    from desktop_api.service.writer import SessionWriter

log = structlog.get_logger("transfer_bridge.cluster")

PAGE = 500  # changes read per query when catching up
REGISTRY_EVERY = 30.0  # seconds between registry reloads without a notification
RETRY_AFTER = 1.0  # seconds before reading again after the store failed


class Follower:
    """The feed and the registry of the other instances, applied here."""

    def __init__(
        self,
        db: StoreRunner,
        writer: SessionWriter,
        registry: Registry,
        evidence: EvidenceRouter,
        metrics: Metrics,
        *,
        listen_url: str | None,
        instance: str,
        poll_interval: float,
    ) -> None:
        self._db = db
        self._writer = writer
        self._registry = registry
        self._evidence = evidence
        self._metrics = metrics
        self._url = listen_url
        self._instance = instance
        self._poll_interval = poll_interval
        self._dirty: set[str] = set()
        self._registry_dirty = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.listening = False
        self.caught_up = 0  # changes of other instances (or late ones of ours) applied here
        writer.on_gap.append(self.mark)

    def mark(self, account_id: str) -> None:
        """The account's feed moved past what this instance passed on: read it."""
        self._dirty.add(account_id)
        self._wake.set()

    def health(self) -> dict[str, object]:
        """For /healthz: whether notifications arrive (else the feed is read every
        `poll_interval`), and how many changes were read from the stored feed."""
        return {"listening": self.listening, "changes_read": self.caught_up}

    async def run(self) -> None:
        """Until cancelled."""
        tasks = [asyncio.create_task(self._work(), name="feed-catch-up")]
        if self._url is not None:
            tasks.append(asyncio.create_task(self._listen(self._url), name="feed-listen"))
            tasks.append(asyncio.create_task(self._poll(), name="feed-poll"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def catch_up(self, account_id: str) -> None:
        """Read the account's stored feed after its last cursor passed on here, and apply it."""
        rebind: set[AgentKey] = set()
        async with self._lock:
            order = self._writer.order
            while True:
                last = order.last(account_id)
                page = await self._db.run(self._db.store.changes_after, account_id, last, PAGE)
                if page and page[0].seq > last + 1:
                    # Older changes were pruned from the feed ([store] keep_changes) before this
                    # instance read them: go on from what is kept.
                    log.warning(
                        "feed_gap_pruned", account_id=account_id, after=last, next=page[0].seq
                    )
                    order.start_at({account_id: page[0].seq - 1})
                for change in page:
                    new = self._writer.take(change.seq, change.session)
                    self.caught_up += 1
                    if new and change.session.call.binding is Binding.NONE:
                        rebind.add((account_id, change.session.agent_id))
                if len(page) < PAGE:
                    break
            self._metrics.feed_catch_ups.inc()
        for key in sorted(rebind):
            await self._evidence.rebind(key)

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._registry_dirty:
                    self._registry_dirty = False
                    await self._registry.reload()
                while self._dirty:
                    # Taken off before reading: a notification arriving meanwhile marks it again.
                    account_id = min(self._dirty)
                    self._dirty.discard(account_id)
                    try:
                        await self.catch_up(account_id)
                    except BaseException:
                        self._dirty.add(account_id)
                        raise
            except StoreUnavailable:
                # Keep what is still to read; try again shortly.
                await asyncio.sleep(RETRY_AFTER)
                self._wake.set()
            except Exception:
                log.exception("feed_catch_up_failed")
                await asyncio.sleep(RETRY_AFTER)
                self._wake.set()

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        registry_at = loop.time() + REGISTRY_EVERY
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                cursors = await self._db.run(self._db.store.last_change_cursors)
            except StoreUnavailable:
                continue
            order = self._writer.order
            for account_id, cursor in cursors.items():
                if cursor > order.last(account_id):
                    self._dirty.add(account_id)
            if loop.time() >= registry_at:
                registry_at = loop.time() + REGISTRY_EVERY
                self._registry_dirty = True
            if self._dirty or self._registry_dirty:
                self._wake.set()

    async def _listen(self, url: str) -> None:
        where = redacted_url(url)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=f"transfer-bridge {self._instance} feed"[:63],
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    await conn.execute(f"LISTEN {REGISTRY_CHANNEL}")
                    self.listening = True
                    log.info("feed_listening", store=where)
                    # What was missed while not listening: the next poll finds the feeds;
                    # the registry is reloaded now.
                    self._registry_dirty = True
                    self._wake.set()
                    async for note in conn.notifies():
                        self._notified(note.channel, note.payload)
            except (psycopg.Error, OSError) as exc:
                if self.listening:
                    log.warning("feed_listen_lost", store=where, error=type(exc).__name__)
                self.listening = False
                await asyncio.sleep(self._poll_interval)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == REGISTRY_CHANNEL:
            self._registry_dirty = True
            self._wake.set()
            return
        account_id, _, raw = payload.partition(" ")
        cursor = ascii_uint(raw, max_digits=19)
        if cursor is None or cursor > self._writer.order.last(account_id):
            self.mark(account_id)
