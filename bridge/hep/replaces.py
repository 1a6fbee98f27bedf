"""INVITEs with Replaces (RFC 3891) naming a watched phone's dialog, until they are answered.

A 2xx to such an INVITE means the named dialog was replaced: the target took the consult's (or
the customer's) place, which is an attended transfer's target-side proof. No I/O; times are the
bridge's own receive time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from bridge.hep.legs import DialogChange, DialogReplaced, Leg
from bridge.sip import ReplacesParams

__all__ = ["MAX_REPLACING", "ReplacingInvites"]

MAX_REPLACING = 4096  # INVITEs with Replaces awaiting their answer; the oldest goes past this


class ReplacingInvites:
    """Call-ID of an INVITE with Replaces -> the legs it names, until it may be answered."""

    def __init__(self, window: float = 64.0) -> None:
        self.window = window  # 64 x T1: the INVITE transaction's own limit
        self._by_call: dict[str, tuple[tuple[Leg, ...], float]] = {}
        self._order: deque[tuple[float, str]] = deque()
        self.dropped = 0  # forgotten at the cap before their window ended

    def __len__(self) -> int:
        return len(self._by_call)

    def __bool__(self) -> bool:
        return bool(self._by_call)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._by_call

    def note(self, call_id: str, replaces: ReplacesParams, legs: Iterable[Leg], now: float) -> None:
        """An INVITE (``call_id``) with ``replaces``; ``legs`` are those under its Call-ID."""
        named = tuple(leg for leg in legs if leg.verified and _tags_match(leg, replaces))
        if named:
            deadline = now + self.window
            self._by_call[call_id] = (named, deadline)
            self._order.append((deadline, call_id))
            while len(self._order) > MAX_REPLACING:
                _, oldest = self._order.popleft()
                if self._by_call.pop(oldest, None) is not None:
                    self.dropped += 1

    def answered(self, call_id: str, out: list[DialogChange]) -> None:
        """A 2xx to INVITE ``call_id``: the dialogs it named are replaced."""
        entry = self._by_call.pop(call_id, None)
        if entry is None:
            return
        for leg in entry[0]:
            if not leg.removed and not leg.replaced:
                leg.replaced = True
                out.append(DialogReplaced(leg))

    def next_deadline(self) -> float | None:
        """When :meth:`expire` may next forget one."""
        return self._order[0][0] if self._order else None

    def expire(self, now: float) -> None:
        """Forget INVITEs that can no longer be answered."""
        order = self._order
        while order and order[0][0] <= now:
            _, call_id = order.popleft()
            entry = self._by_call.get(call_id)
            if entry is not None and entry[1] <= now:
                del self._by_call[call_id]


def _tags_match(leg: Leg, replaces: ReplacesParams) -> bool:
    tags = {replaces.to_tag, replaces.from_tag}
    if leg.phone_tag is not None and leg.remote_tag is not None:
        return {leg.phone_tag, leg.remote_tag} == tags
    return leg.phone_tag in tags or leg.remote_tag in tags
