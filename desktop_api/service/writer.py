"""Every session change goes through here: one agent at a time, to the store, then visible."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from bridge.model import Account, Session, TransferState
from bridge.session.outcome import AuditEntry, Outcome
from bridge.store import SessionWrite, StoreConflict, WriteGuard
from desktop_api.changes import ChangeHub
from desktop_api.cluster.agent_lock import AgentLocks
from desktop_api.cluster.feed_order import FeedOrder
from desktop_api.metrics import Metrics
from desktop_api.service.open_sessions import AgentKey, OpenSessions
from desktop_api.service.runner import StoreRunner

T = TypeVar("T")


def newly_transferred(before: Session, after: Session) -> bool:
    """Whether this change is the one that made the transfer done (counted once)."""
    return (
        after.transfer.state is TransferState.TRANSFERRED
        and before.transfer.state is not TransferState.TRANSFERRED
    )


class SessionWriter:
    """Per-agent locks, and commits that make a change visible only once it is stored."""

    def __init__(
        self,
        db: StoreRunner,
        open_sessions: OpenSessions,
        hub: ChangeHub,
        metrics: Metrics,
        clock: Callable[[], str],
    ) -> None:
        self._db = db
        self._open = open_sessions
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self._locks: dict[AgentKey, asyncio.Lock] = {}
        self.order = FeedOrder(hub.publish)
        # Set when the store is shared with other instances (PostgreSQL).
        self.agent_locks: AgentLocks | None = None
        # Called with an account whose change arrived ahead of a missing one (read the store).
        self.on_gap: list[Callable[[str], None]] = []

    def lock(self, key: AgentKey) -> asyncio.Lock:
        """The agent's lock: a click and phone evidence for one agent never race."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def load(self) -> None:
        """Read the open sessions the store holds (once, at start-up)."""
        for session in await self._db.run(self._db.store.load_open_sessions):
            self._open.remember(session)
        self._metrics.sessions_open.set(len(self._open))

    async def commit(self, writes: Sequence[SessionWrite], guard: WriteGuard | None = None) -> None:
        """Write, then make visible: the cache and the feed only ever show committed state.

        Raises `StoreConflict` when another instance changed a session first (re-read it with
        `refresh_agent` and decide again), or what `guard` refuses."""
        if not writes:
            return
        seqs = await self._db.run(self._db.store.write_sessions, writes, guard)
        for seq, write in zip(seqs, writes, strict=True):
            self.take(seq, write.session)

    def take(self, seq: int, session: Session) -> bool:
        """A committed change (ours, or another instance's read from the feed): into the cache,
        then to long-polls and streams in cursor order. Returns whether the session was new to
        this instance."""
        new = self._open.remember(session)
        self._metrics.sessions_open.set(len(self._open))
        if self.order.offer(seq, session):
            for callback in self.on_gap:
                callback(session.account_id)
        return new

    async def settle(
        self, key: AgentKey, attempt: Callable[[WriteGuard], Awaitable[T]], guard: WriteGuard
    ) -> T:
        """`attempt(guard)` decides from the cache and commits, under the agent's lock here.

        When another instance wrote for the agent first (`StoreConflict`), decide again from
        the store's state holding the agent's lock in the database across the read, the
        decision and the write (`cluster.agent_lock`): the second attempt cannot lose."""
        try:
            return await attempt(guard)
        except StoreConflict:
            if self.agent_locks is None:
                raise
        self._metrics.write_retries.inc()
        async with self.agent_locks.hold(*key):
            await self.refresh_agent(key)
            return await attempt(replace(guard, agent_locked=True))

    async def refresh_agent(self, key: AgentKey) -> None:
        """Re-read the agent's open sessions from the store: another instance wrote first."""
        stored = await self._db.run(self._db.store.open_sessions_of_agent, *key)
        self._open.replace_agent(key, stored)
        self._metrics.sessions_open.set(len(self._open))

    async def commit_outcomes(
        self,
        outcomes: Sequence[Outcome],
        guard: WriteGuard | None = None,
        bases: Mapping[str, int] | None = None,
    ) -> None:
        """Commit what the machine changed; audit what it refused or left as it was.

        `bases`: the version of each session the outcomes were decided on (by session id); a
        session stored at another version refuses the write. `guard` is checked in the first
        transaction (the writes, or else the first audit)."""
        bases = bases or {}
        writes = [
            SessionWrite(o.session, o.audit, base=bases.get(o.session.id))
            for o in outcomes
            if o.changed
        ]
        await self.commit(writes, guard)
        unchecked = None if writes else guard
        for o in outcomes:
            if not o.changed and o.audit:
                await self._db.run(self._db.store.append_audit, o.session, o.audit, unchecked)
                unchecked = None

    async def touch_account(self, account: Account) -> None:
        """A new version of each open session of the account (its transfer switch changed),
        so desktops waiting on them see their `actions` change at once."""
        for agent_id in self._open.agents_of(account.id):
            key = (account.id, agent_id)
            async with self.lock(key):
                now = self._clock()
                entry = AuditEntry(
                    now,
                    "system",
                    "account_transfer_switched",
                    {"transfer_enabled": account.transfer_enabled},
                )
                bump = functools.partial(self._bump, key, entry)
                await self.settle(key, bump, WriteGuard(agent=key))

    async def _bump(self, key: AgentKey, entry: AuditEntry, guard: WriteGuard) -> None:
        writes = [
            SessionWrite(
                replace(s, version=s.version + 1, updated_at=entry.at), (entry,), base=s.version
            )
            for s in self._open.of_agent(key)
        ]
        await self.commit(writes, guard)
