"""Transfer detection: dialog changes become the phone evidence the session machine consumes.

Every event is about the agent phone's call with the customer: consult progress and REFER
evidence carry that call's Call-ID and the customer's number. A transfer succeeds only on proof
(a 2xx sipfrag NOTIFY for the REFER, or an answered INVITE with Replaces naming the consult or
the customer dialog); it fails on a 3xx-6xx sipfrag, a rejected REFER, or the customer hanging
up while a consult or transfer is under way. A 202, or the PBX's BYE after a REFER, proves
nothing. :class:`bridge.hep.tracker.SipTracker` feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable

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
from bridge.hep.legs import (
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
from bridge.model import CallState, ConsultState, ReferState, TransferKind
from bridge.timefmt import Rfc3339Stamps

__all__ = ["TransferDetector"]

_CONSULT_STATE = {
    LegStarted: ConsultState.DIALING,
    LegRinging: ConsultState.RINGING,
    LegAnswered: ConsultState.ANSWERED,
}
_PENDING = frozenset({ReferState.REQUESTED, ReferState.ACCEPTED, ReferState.TRYING})
# Observations are immutable: the common ones are shared rather than built per event.
_CALL_STATE = {state: CallStateChanged(state) for state in CallState}
_ACCEPTED = TransferProgressed(ReferState.ACCEPTED)


class TransferDetector:
    """Turns :mod:`bridge.hep.dialogs` changes into observations about the customer call."""

    __slots__ = ("_proven", "_stamp", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._stamp = Rfc3339Stamps()
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
