"""The SIP-over-HEP pipeline for one source: parse, de-duplicate, track dialogs, detect transfers.

:class:`SipTracker` is what the HEP driver feeds, one SIP payload at a time; it owns the
de-duplicator (:mod:`bridge.hep.dedup`), the dialog tracker (:mod:`bridge.hep.dialogs`) and the
transfer detector (:mod:`bridge.hep.detector`), and returns the phone evidence they conclude.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from bridge.evidence import PhoneEvent
from bridge.hep.dedup import DEFAULT_WINDOW, Deduplicator, message_key
from bridge.hep.detector import TransferDetector
from bridge.hep.dialogs import DialogTracker
from bridge.hep.directory import PhoneDirectory
from bridge.hep.sides import Hop
from bridge.sip import SipMessage, SipParseError, parse_message

__all__ = ["MAX_CALL_ID", "MAX_PARTY_HEADER", "SipTracker", "TrackerStats"]

# Longer than any real UA sends (Call-IDs are UUID-sized, From/To a few hundred bytes); a
# message past either is dropped (counted `oversized`) before anything of it is kept.
MAX_CALL_ID = 256
MAX_PARTY_HEADER = 1024


class TrackerStats(NamedTuple):
    """Counters of a :class:`SipTracker`."""

    messages: int  # fed, including dropped ones
    duplicates: int  # retransmissions and second captures
    unmatched: int  # about no watched phone's dialog
    dropped: int  # malformed
    dialogs: int  # legs tracked now
    dedupe_entries: int
    events: int  # phone events produced
    evicted: int = 0  # entries of any table dropped past its cap (see `SipTracker.tables`)
    oversized: int = 0  # Call-ID or From/To longer than any real UA sends: not kept


class SipTracker:
    """SIP messages of the watched phones in, :class:`PhoneEvent` out; sans-I/O.

    Two clocks: ``at`` is the capture time (seconds since the epoch, from the HEP header), which
    only stamps the evidence (what the audit shows as ``observed_at``); ``now`` is the bridge's
    own receive time (any monotonic clock), which alone decides de-duplication windows, expiry
    and ordering, so a capture replayed days later or a capture host whose clock is off gives
    the same verdict as live traffic. Without ``now`` the capture time stands in for it (unit
    tests of recorded flows). Call :meth:`expire` with the same clock as ``now`` once
    :meth:`next_deadline` has passed to keep memory bounded.
    """

    def __init__(
        self,
        directory: PhoneDirectory,
        source: str = "hep",
        *,
        dedupe_window: float = DEFAULT_WINDOW,
        linger: float = 32.0,
        idle_max: float = 4 * 3600.0,
        tick: float = 1.0,
    ) -> None:
        self.directory = directory
        self.tick = tick  # deadlines are rounded up to this, so expiry runs in batches
        self.dialogs = DialogTracker(directory, linger=linger, idle_max=idle_max)
        self.detector = TransferDetector(source)
        self.dedup = Deduplicator(dedupe_window)
        self._messages = 0
        self._duplicates = 0
        self._unmatched = 0
        self._dropped = 0
        self._oversized = 0
        self._events = 0

    def feed(
        self,
        msg: SipMessage,
        at: float,
        now: float | None = None,
        src: Hop | None = None,
        dst: Hop | None = None,
    ) -> list[PhoneEvent]:
        """Apply one parsed message; malformed headers count as dropped, never raise. ``src``
        and ``dst`` are the packet's addresses (HEP header) when known: they tell the phone's
        messages from a PBX's (:mod:`bridge.hep.sides`)."""
        if now is None:
            now = at
        self._messages += 1
        dialogs = self.dialogs
        try:
            if not dialogs.may_concern(msg):
                self._unmatched += 1
                return []
            if _oversized(msg, dialogs):
                self._oversized += 1
                return []
            if self.dedup.seen(message_key(msg), now):
                self._duplicates += 1
                return []
            changes = dialogs.feed(msg, now, src, dst)
        except SipParseError:
            self._dropped += 1
            return []
        evicted = dialogs.take_evicted()
        if evicted:
            self.detector.forget(evicted)
        if not changes:
            return []
        events = self.detector.events(changes, at)
        self._events += len(events)
        return events

    def feed_bytes(
        self,
        data: bytes,
        at: float,
        now: float | None = None,
        src: Hop | None = None,
        dst: Hop | None = None,
    ) -> list[PhoneEvent]:
        """Parse and apply one datagram; unparseable input counts as dropped."""
        try:
            msg = parse_message(data)
        except SipParseError:
            self._messages += 1
            self._dropped += 1
            return []
        return self.feed(msg, at, now, src, dst)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` should next run (on the ``now`` clock, a multiple of ``tick``)."""
        times = [
            t for t in (self.dedup.next_deadline(), self.dialogs.next_deadline()) if t is not None
        ]
        if not times:
            return None
        tick = self.tick
        return math.ceil(min(times) / tick) * tick if tick > 0 else min(times)

    def expire(self, now: float) -> None:
        """Forget de-duplication keys and dialogs that are past their time."""
        self.dedup.expire(now)
        self.detector.forget(self.dialogs.expire(now))

    def tables(self) -> dict[str, tuple[int, int]]:
        """Every table the pipeline keeps: name -> (entries now, entries evicted at its cap)."""
        dialogs = self.dialogs
        return {
            "dedup": (len(self.dedup), self.dedup.evicted),
            "legs": (len(dialogs), dialogs.evicted),
            "target_watches": (len(dialogs.targets), dialogs.targets.dropped),
            "callers": (len(dialogs.callers), dialogs.callers.dropped),
            "replacing": (len(dialogs.replacing), dialogs.replacing.dropped),
        }

    @property
    def stats(self) -> TrackerStats:
        """A snapshot of the counters."""
        return TrackerStats(
            messages=self._messages,
            duplicates=self._duplicates,
            unmatched=self._unmatched + self.dialogs.unmatched,
            dropped=self._dropped,
            dialogs=len(self.dialogs),
            dedupe_entries=len(self.dedup),
            events=self._events,
            evicted=sum(evicted for _, evicted in self.tables().values()),
            oversized=self._oversized,
        )


def _oversized(msg: SipMessage, dialogs: DialogTracker) -> bool:
    """A Call-ID, From or To no real UA sends: a peer trying to make the tables expensive.
    From and To matter only in a request that may begin a dialog (a known Call-ID passed)."""
    call_id = msg.call_id
    if len(call_id) > MAX_CALL_ID:
        return True
    if not msg.is_request or dialogs.tracks(call_id):
        return False
    return (
        len(msg.header("from") or "") > MAX_PARTY_HEADER
        or len(msg.header("to") or "") > MAX_PARTY_HEADER
    )
