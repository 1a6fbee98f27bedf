"""Changes reach long-polls and SSE streams in cursor order, with no gap, whoever wrote them.

Each account's change cursors (1, 2, 3, ...) are handed out by the store. This instance learns
of a change either from its own commit or from the store's feed (another instance's commit,
read by `desktop_api.cluster.follower`), in any order. `FeedOrder` passes them on strictly in
cursor order: a change whose predecessor has not been seen yet waits, and the account is marked
for a catch-up read of the store. A desktop that resumes with `Last-Event-ID` after the last
event it received therefore never misses one. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.model import Session

Publish = Callable[[int, Session], None]
PENDING_LIMIT = 10_000  # changes held per account while waiting for a missing one


class FeedOrder:
    """Per account: the last cursor passed on, and changes that arrived ahead of a gap."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._last: dict[str, int] = {}
        self._ahead: dict[str, dict[int, Session]] = {}

    def start_at(self, cursors: dict[str, int]) -> None:
        """Each account's newest cursor when the instance started: nothing before is passed."""
        for account_id, cursor in cursors.items():
            self._last[account_id] = max(self._last.get(account_id, 0), cursor)

    def last(self, account_id: str) -> int:
        """The account's newest cursor passed on (0: none)."""
        return self._last.get(account_id, 0)

    def offer(self, cursor: int, session: Session) -> bool:
        """A committed change; True when it waits behind a missing one (read the store)."""
        account_id = session.account_id
        last = self._last.get(account_id, 0)
        if cursor <= last:
            return False  # already passed on (our own commit, then read back from the feed)
        if cursor > last + 1:
            waiting = self._ahead.setdefault(account_id, {})
            if len(waiting) < PENDING_LIMIT:
                waiting[cursor] = session
            return True
        self._publish(cursor, session)
        last = cursor
        ahead = self._ahead.get(account_id)
        while ahead and last + 1 in ahead:
            last += 1
            self._publish(last, ahead.pop(last))
        self._last[account_id] = last
        if ahead is not None:
            for stale in [c for c in ahead if c <= last]:
                del ahead[stale]
            if not ahead:
                del self._ahead[account_id]
        return bool(ahead)

    def waiting(self) -> list[str]:
        """Accounts holding changes behind a gap."""
        return sorted(self._ahead)
