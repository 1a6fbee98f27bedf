"""Transfer detection: dialog changes become the phone evidence the session machine consumes.

Every event is about the agent phone's call with the customer: consult progress and REFER
evidence carry that call's Call-ID and the customer's number. A transfer succeeds only on proof
(a 2xx sipfrag NOTIFY for the REFER, or an answered INVITE with Replaces naming the consult or
the customer dialog); it fails on a 3xx-6xx sipfrag, a rejected REFER, or the customer hanging
up while a consult or transfer is under way. A 202, or the PBX's BYE after a REFER, proves
nothing. :class:`SipTracker` puts de-duplication, dialog tracking and detection together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple

from bridge.call_legs import (
    DialogChange,
    DialogReplaced,
    HoldChanged,
    Leg,
    LegAnswered,
    LegEnded,
    LegRinging,
    LegRole,
    LegStarted,
    LegState,
    ReferAnswered,
    ReferNotified,
    ReferSent,
)
from bridge.dedup import DEFAULT_WINDOW, Deduplicator, message_key
from bridge.dialogs import DialogTracker
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, ReferState, TransferKind
from bridge.phone_directory import PhoneDirectory
from bridge.sip import SipMessage, SipParseError, parse_message

__all__ = ["SipTracker", "TrackerStats", "TransferDetector", "rfc3339"]

_CONSULT_STATE = {
    LegStarted: ConsultState.DIALING,
    LegRinging: ConsultState.RINGING,
    LegAnswered: ConsultState.ANSWERED,
}
_PENDING = frozenset({ReferState.REQUESTED, ReferState.ACCEPTED, ReferState.TRYING})
# Observations are immutable: the common ones are shared rather than built per event.
_CALL_STATE = {state: CallStateChanged(state) for state in CallState}
_ACCEPTED = TransferProgressed(ReferState.ACCEPTED)


def rfc3339(at: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with milliseconds: ``2026-11-25T11:05:42.123Z``."""
    second, ms = divmod(round(at * 1000), 1000)
    text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms:03d}Z"


class _Stamps:
    """:func:`rfc3339` for the hot path: the date is formatted once a day, the rest by hand."""

    __slots__ = ("date", "day", "prefix", "second")

    def __init__(self) -> None:
        self.day = self.second = -1
        self.date = self.prefix = ""

    def __call__(self, at: float) -> str:
        second, ms = divmod(round(at * 1000), 1000)
        if second != self.second:
            self.second = second
            day, rest = divmod(second, 86400)
            if day != self.day:
                self.day = day
                self.date = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT")
            hours, rest = divmod(rest, 3600)
            minutes, rest = divmod(rest, 60)
            self.prefix = f"{self.date}{hours:02d}:{minutes:02d}:{rest:02d}"
        return f"{self.prefix}.{ms:03d}Z"


class TransferDetector:
    """Turns :mod:`bridge.dialogs` changes into observations about the customer call."""

    __slots__ = ("_proven", "_stamp", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._stamp = _Stamps()
        self._proven: set[Leg] = set()  # customer calls whose transfer success was reported

    def events(self, changes: Iterable[DialogChange], at: float) -> list[PhoneEvent]:
        """The phone events for these changes, observed at capture time ``at``."""
        found: list[tuple[Leg, Observation]] = []
        for change in changes:
            self._observe(change, found)
        if not found:
            return []
        stamp = self._stamp(at)
        source = self.source
        return [
            PhoneEvent(call.phone, PhoneEvidence(source, stamp, obs), call.call_id, call.remote)
            for call, obs in found
        ]

    def forget(self, legs: Iterable[Leg]) -> None:
        """Drop what is kept about legs the dialog tracker no longer tracks."""
        for leg in legs:
            self._proven.discard(leg)

    def _observe(self, change: DialogChange, out: list[tuple[Leg, Observation]]) -> None:
        match change:
            case LegStarted(leg=leg) | LegRinging(leg=leg) | LegAnswered(leg=leg):
                customer = leg.customer
                if leg.role is LegRole.CONSULT and customer is not None:
                    state = _CONSULT_STATE[type(change)]
                    out.append((customer, ConsultChanged(state, leg.remote)))
                elif isinstance(change, LegAnswered):
                    out.append((leg, _CALL_STATE[CallState.CONNECTED]))
                elif isinstance(change, LegRinging) and not leg.outgoing:
                    out.append((leg, _CALL_STATE[CallState.RINGING]))
            case HoldChanged(leg=leg, held=held):
                if leg.role is LegRole.CALL and leg.state is LegState.CONFIRMED:
                    call_state = CallState.ON_HOLD if held else CallState.CONNECTED
                    out.append((leg, _CALL_STATE[call_state]))
            case LegEnded():
                self._ended(change, out)
            case ReferSent(leg=leg, refer=refer):
                call = leg.customer_leg
                if call not in self._proven:
                    target = leg.remote if leg.role is LegRole.CONSULT else refer.target
                    kind = refer.kind or TransferKind.BLIND
                    out.append((call, TransferRequested(kind, target)))
            case ReferAnswered(leg=leg, code=code, status_line=line):
                call = leg.customer_leg
                if call in self._proven:
                    return
                if code < 300:
                    out.append((call, _ACCEPTED))
                else:
                    self._failed(call, TransferFailed("refer_rejected", line), out)
            case ReferNotified(leg=leg, code=code, sipfrag=line):
                call = leg.customer_leg
                if call in self._proven:
                    return
                if code < 200:
                    out.append((call, TransferProgressed(ReferState.TRYING, line)))
                elif code < 300:
                    self._proven.add(call)
                    out.append((call, TransferSucceeded("notify_2xx", line)))
                else:
                    self._failed(call, TransferFailed("notify_failure", line), out)
            case DialogReplaced(leg=leg):
                self._replaced(leg, out)

    def _ended(self, change: LegEnded, out: list[tuple[Leg, Observation]]) -> None:
        leg = change.leg
        if leg.role is LegRole.CONSULT:
            call = leg.customer
            # The consult ending as part of a transfer is not an abandoned consult.
            if call is not None and not self._transfer_underway(call):
                out.append((call, ConsultChanged(ConsultState.ENDED, leg.remote)))
            return
        answered = change.prior is LegState.CONFIRMED
        if (
            answered
            and not change.by_phone
            and leg not in self._proven
            and not leg.replaced
            and _in_progress(leg)
        ):
            out.append((leg, TransferFailed("customer_hung_up")))
        if answered or (change.prior is LegState.EARLY and not leg.outgoing):
            out.append((leg, _CALL_STATE[CallState.ENDED]))

    def _failed(
        self, call: Leg, failure: TransferFailed, out: list[tuple[Leg, Observation]]
    ) -> None:
        out.append((call, failure))
        consult = call.consult
        # A consult that ended while the REFER was pending was not reported then: report it now.
        if (
            consult is not None
            and consult.state is LegState.TERMINATED
            and not self._transfer_underway(call)
        ):
            out.append((call, ConsultChanged(ConsultState.ENDED, consult.remote)))

    def _transfer_underway(self, call: Leg) -> bool:
        if call in self._proven:
            return True
        return any(r.state is not ReferState.FAILED for r in call.all_refers())

    def _replaced(self, leg: Leg, out: list[tuple[Leg, Observation]]) -> None:
        if leg.role is LegRole.CONSULT:
            call = leg.customer
        elif _in_progress(leg):
            call = leg  # the customer dialog itself was replaced (REFER sent in the consult)
        else:
            return  # e.g. a call picked up by another phone: no transfer of ours
        if call is not None and call not in self._proven:
            self._proven.add(call)
            out.append((call, TransferSucceeded("dialog_replaced")))


def _in_progress(call: Leg) -> bool:
    """A consult is up, or a REFER awaits its outcome (a REFER with no subscription excepted)."""
    consult = call.consult
    if consult is not None and consult.state is not LegState.TERMINATED:
        return True
    for refer in call.all_refers():
        if refer.state is ReferState.REQUESTED or (refer.state in _PENDING and refer.subscribed):
            return True
    return False


class TrackerStats(NamedTuple):
    """Counters of a :class:`SipTracker`."""

    messages: int  # fed, including dropped ones
    duplicates: int  # retransmissions and second captures
    unmatched: int  # about no watched phone's dialog
    dropped: int  # malformed
    dialogs: int  # legs tracked now
    dedupe_entries: int
    events: int  # phone events produced


class SipTracker:
    """SIP messages of the watched phones in, :class:`PhoneEvent` out; sans-I/O.

    ``at`` is the capture time (seconds since the epoch). Call :meth:`expire` with the current
    time once :meth:`next_deadline` has passed to keep memory bounded.
    """

    def __init__(
        self,
        directory: PhoneDirectory,
        source: str = "hep",
        *,
        contact_check: bool = True,
        dedupe_window: float = DEFAULT_WINDOW,
        linger: float = 32.0,
        idle_max: float = 4 * 3600.0,
        tick: float = 1.0,
    ) -> None:
        self.directory = directory
        self.tick = tick  # deadlines are rounded up to this, so expiry runs in batches
        self.dialogs = DialogTracker(
            directory, contact_check=contact_check, linger=linger, idle_max=idle_max
        )
        self.detector = TransferDetector(source)
        self.dedup = Deduplicator(dedupe_window)
        self._messages = 0
        self._duplicates = 0
        self._unmatched = 0
        self._dropped = 0
        self._events = 0

    def feed(self, msg: SipMessage, at: float) -> list[PhoneEvent]:
        """Apply one parsed message; malformed headers count as dropped, never raise."""
        self._messages += 1
        dialogs = self.dialogs
        try:
            if not dialogs.may_concern(msg):
                self._unmatched += 1
                return []
            if self.dedup.seen(message_key(msg), at):
                self._duplicates += 1
                return []
            changes = dialogs.feed(msg, at)
        except SipParseError:
            self._dropped += 1
            return []
        if not changes:
            return []
        events = self.detector.events(changes, at)
        self._events += len(events)
        return events

    def feed_bytes(self, data: bytes, at: float) -> list[PhoneEvent]:
        """Parse and apply one datagram; unparseable input counts as dropped."""
        try:
            msg = parse_message(data)
        except SipParseError:
            self._messages += 1
            self._dropped += 1
            return []
        return self.feed(msg, at)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` should next run (capture-time seconds, a multiple of ``tick``)."""
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
        )
