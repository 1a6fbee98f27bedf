"""Every session change goes through here: one agent at a time, to the store, then visible."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace

from bridge.model import Account, Session, TransferState
from bridge.session.outcome import AuditEntry, Outcome
from bridge.store import SessionWrite
from desktop_api.changes import ChangeHub
from desktop_api.metrics import Metrics
from desktop_api.service.open_sessions import AgentKey, OpenSessions
from desktop_api.service.runner import StoreRunner


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

    async def commit(self, writes: Sequence[SessionWrite]) -> None:
        """Write, then make visible: the cache and the feed only ever show committed state."""
        if not writes:
            return
        seqs = await self._db.run(self._db.store.write_sessions, writes)
        for seq, write in zip(seqs, writes, strict=True):
            self._open.remember(write.session)
            self._hub.publish(seq, write.session)
        self._metrics.sessions_open.set(len(self._open))

    async def commit_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Commit what the machine changed; audit what it refused or left as it was."""
        writes = [SessionWrite(o.session, o.audit) for o in outcomes if o.changed]
        await self.commit(writes)
        quiet = [o for o in outcomes if not o.changed and o.audit]
        for o in quiet:
            await self._db.run(self._db.store.append_audit, o.session, o.audit)

    async def touch_account(self, account: Account) -> None:
        """A new version of each open session of the account (its transfer switch changed),
        so desktops waiting on them see their `actions` change at once."""
        for agent_id in self._open.agents_of(account.id):
            async with self.lock((account.id, agent_id)):
                now = self._clock()
                entry = AuditEntry(
                    now,
                    "system",
                    "account_transfer_switched",
                    {"transfer_enabled": account.transfer_enabled},
                )
                writes = [
                    SessionWrite(replace(s, version=s.version + 1, updated_at=now), (entry,))
                    for s in self._open.of_agent((account.id, agent_id))
                ]
                await self.commit(writes)
