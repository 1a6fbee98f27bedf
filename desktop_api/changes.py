"""Wakes long-polls and feeds Server-Sent Events streams when a session changes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from bridge.model import Session

QUEUE_LIMIT = 1000


@dataclass(eq=False)
class Subscriber:
    """One SSE stream of one account; `overflowed` means it fell behind and must reconnect."""

    account_id: str
    agent_id: str | None
    queue: asyncio.Queue[tuple[int, Session] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )
    overflowed: bool = False


class ChangeHub:
    """In-process fan-out of committed session changes."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}  # account id -> its newest change cursor
        self._waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self._subscribers: dict[str, set[Subscriber]] = {}
        self.closed = False

    def publish(self, seq: int, session: Session) -> None:
        """A change is committed: wake its long-polls and queue it for its account's streams.

        `seq` is the account's own cursor (`bridge.store.Change`)."""
        self.last[session.account_id] = max(self.last.get(session.account_id, 0), seq)
        for fut in self._waiters.pop((session.account_id, session.id), ()):
            if not fut.done():
                fut.set_result(None)
        for sub in self._subscribers.get(session.account_id, ()):
            if sub.agent_id is not None and sub.agent_id != session.agent_id:
                continue
            try:
                sub.queue.put_nowait((seq, session))
            except asyncio.QueueFull:
                # A stream that cannot keep up is cut; the client resumes with Last-Event-ID.
                sub.overflowed = True

    async def wait(
        self,
        account_id: str,
        session_id: str,
        seconds: float,
        gone: asyncio.Future[None] | None = None,
    ) -> None:
        """Return on the session's next change, on shutdown, after `seconds`, or as soon as
        `gone` (the client's connection lost) resolves."""
        if self.closed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault((account_id, session_id), set())
        waiters.add(fut)
        try:
            await asyncio.wait(
                {fut} if gone is None else {fut, gone},
                timeout=seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiters.discard(fut)
            # Only drop the set if it is still the registered one: publish() may have swapped
            # in a new set that later long-polls are waiting in.
            if not waiters and self._waiters.get((account_id, session_id)) is waiters:
                del self._waiters[(account_id, session_id)]

    def last_cursor(self, account_id: str) -> int:
        """The account's newest change cursor (0: none yet)."""
        return self.last.get(account_id, 0)

    def subscribe(self, account_id: str, agent_id: str | None) -> Subscriber:
        """Start receiving an account's changes."""
        sub = Subscriber(account_id, agent_id)
        self._subscribers.setdefault(account_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop receiving."""
        subs = self._subscribers.get(sub.account_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.account_id]

    def counts(self) -> tuple[int, int]:
        """(long-polls waiting, SSE streams open)."""
        return (
            sum(len(w) for w in self._waiters.values()),
            sum(len(s) for s in self._subscribers.values()),
        )

    def close(self) -> None:
        """Shutting down: release every long-poll and end every stream."""
        self.closed = True
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        for subs in self._subscribers.values():
            for sub in subs:
                sub.overflowed = True
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)
