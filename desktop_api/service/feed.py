"""The durable change feed behind SSE resume: cursors, replay pages and retention."""

from __future__ import annotations

import structlog

from bridge.store import Change
from desktop_api.changes import ChangeHub
from desktop_api.cluster.feed_order import FeedOrder
from desktop_api.service.runner import StoreRunner

log = structlog.get_logger("transfer_bridge.service")


class ChangeFeed:
    """The store's side of the feed; `ChangeHub` is its live, in-process side."""

    def __init__(self, db: StoreRunner, hub: ChangeHub, order: FeedOrder) -> None:
        self._db = db
        self._hub = hub
        self._order = order

    async def load(self) -> None:
        """Start the live side at each account's newest cursor (once, at start-up)."""
        cursors = await self._db.run(self._db.store.last_change_cursors)
        self._hub.last.update(cursors)
        self._order.start_at(cursors)

    async def changes_after(self, account_id: str, seq: int, limit: int) -> list[Change]:
        """The change feed after a cursor, from the store."""
        return await self._db.run(self._db.store.changes_after, account_id, seq, limit)

    async def first_change_seq(self, account_id: str) -> int:
        """The account's oldest cursor the change feed can still replay from (0: empty)."""
        return await self._db.run(self._db.store.first_change_seq, account_id)

    async def prune_changes(self, keep: int) -> int:
        """Drop all but the newest `keep` changes of the feed; how many went."""
        dropped = await self._db.run(self._db.store.prune_changes, keep)
        if dropped:
            log.info("change_feed_pruned", dropped=dropped, kept=keep)
        return dropped
