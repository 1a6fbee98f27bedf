"""One SIP message seen twice is one message: UDP retransmissions and double capture.

A proxy's siptrace (Kamailio) captures each message as received and as forwarded; the forwarded
copy has one more Via on top and a Record-Route, so the key uses what both copies share: Call-ID,
CSeq number and method, the status code of a response and the *bottom* Via's branch (the
originating UA's). Memory is bounded by a time window on the bridge's own clock and a hard cap
on entries (past it the oldest is forgotten and counted in ``evicted``); only a 64-bit hash of
each key is kept, so a peer's long Call-IDs or branches cost nothing here.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from bridge.sip import SipMessage, parse_via
from bridge.sip.syntax import split_top_level

__all__ = ["Deduplicator", "MessageKey", "bottom_via_branch", "message_key"]

DEFAULT_WINDOW = 32.0  # 64*T1: the longest a SIP transaction retransmits (RFC 3261 17)
DEFAULT_MAX_ENTRIES = 200_000  # ~30 MB; 32 s of 6,000 messages/s


class MessageKey(NamedTuple):
    """What a retransmission and a proxy's second capture of a message have in common."""

    call_id: str
    cseq: int
    method: str
    status: int
    branch: str


def bottom_via_branch(msg: SipMessage) -> str:
    """The branch of the bottom Via (the originating UA's), or "" without one."""
    last = msg.bottom_via
    if "," in last:
        last = split_top_level(last, ",", angle=False)[-1]
    i = last.find(";branch=")
    if i >= 0 and '"' not in last:
        end = last.find(";", i + 8)
        return (last[i + 8 :] if end < 0 else last[i + 8 : end]).strip()
    if "branch" not in last.lower():
        return ""
    return parse_via(last.strip()).branch or ""


def message_key(msg: SipMessage) -> MessageKey:
    """The de-duplication key of a message; may raise ``SipParseError`` (bad CSeq or Via)."""
    cseq = msg.cseq
    return _new_key(
        MessageKey,
        (msg.call_id, cseq.number, cseq.method, msg.status_code or 0, bottom_via_branch(msg)),
    )


_new_key = tuple.__new__  # MessageKey(...) without its Python-level __new__ (hot path)


class Deduplicator:
    """Remembers message keys for ``window`` seconds of the clock it is fed; no clock of its own.

    Give it the bridge's receive time (monotonic), never a capture time: one packet stamped in
    2106 would otherwise keep every key until the cap.
    """

    __slots__ = ("_order", "_seen", "evicted", "max_entries", "window")

    def __init__(
        self, window: float = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.evicted = 0  # entries forgotten at the cap while still inside the window
        # hash(key) -> when first seen: a collision (2^-64 a pair) would drop one message.
        self._seen: dict[int, float] = {}
        self._order: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: MessageKey, at: float) -> bool:
        """True if ``key`` was seen less than ``window`` before ``at``; otherwise remember it."""
        digest = hash(key)
        first = self._seen.get(digest)
        if first is not None and abs(at - first) <= self.window:
            return True
        self._seen[digest] = at
        order = self._order
        order.append((at, digest))
        if len(order) > self.max_entries:
            self._drop_oldest()
            self.evicted += 1
        return False

    def _drop_oldest(self) -> None:
        at, digest = self._order.popleft()
        if self._seen.get(digest) == at:
            del self._seen[digest]

    def next_deadline(self) -> float | None:
        """When the oldest entry falls out of the window, or None when empty."""
        return self._order[0][0] + self.window if self._order else None

    def expire(self, now: float) -> None:
        """Forget keys first seen more than ``window`` before ``now``."""
        order = self._order
        limit = now - self.window
        while order and order[0][0] <= limit:
            self._drop_oldest()
