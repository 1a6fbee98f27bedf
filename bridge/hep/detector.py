"""Transfer detection: dialog changes become the phone evidence the session machine consumes.

Every event is about the agent phone's call with the customer: consult progress and REFER
evidence carry that call's Call-ID and the customer's number.

Strong evidence, from the target's side (``TransferSucceeded``): the leg toward the target
answered while carrying the customer (after a blind REFER, or the consult's far leg after a
semi-attended one), an answered INVITE with Replaces naming the consult or the customer dialog,
or a 2xx NOTIFY for a REFER with Replaces whose consult had been answered.

Weak evidence (``TransferReported``): a 2xx NOTIFY for a blind or semi-attended REFER. Asterisk
sends it at the first media frame toward the customer (ringback, early media, an announcement),
at once with ``refer_blind_progress=no``, and for a ringing consult: before anyone answers.

Failure (``TransferFailed`` with a cause): every leg toward the target ended unanswered (486,
603, 487 after a CANCEL...), a 3xx-6xx sipfrag, a rejected REFER, or the customer hanging up
while a consult or transfer is under way. A 202, or the PBX's BYE after a REFER, proves
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
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.hep.legs import (
    TARGET_ROLES,
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
from bridge.model import (
    Q850_CAUSES,
    CallState,
    ConsultState,
    FailureCause,
    ProofGrade,
    ReferState,
    TransferKind,
    failure_cause_of_q850,
    failure_cause_of_status,
)
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
_CUSTOMER_HUNG_UP = TransferFailed("customer_hung_up", None, FailureCause.CUSTOMER_HUNG_UP)
_TARGET_ANSWERED = TransferSucceeded("target_leg_answered", None, ProofGrade.TARGET_ANSWERED)
_REPLACED = TransferSucceeded("dialog_replaced", None, ProofGrade.CONSULT_REPLACED)


class TransferDetector:
    """Turns :mod:`bridge.hep.dialogs` changes into observations about the customer call."""

    __slots__ = ("_proven", "_stamp", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._stamp = Rfc3339Stamps()
        self._proven: set[Leg] = set()  # customer calls whose transfer was proven or failed

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
            case LegAnswered(leg=leg) if leg.role in TARGET_ROLES:
                self._target_answered(leg, out)
            case LegEnded(leg=leg) if leg.role in TARGET_ROLES:
                self._target_ended(change, out)
            case LegEnded(leg=leg) if leg.role is LegRole.CUSTOMER_SIDE:
                self._customer_dropped(change, out)
            case LegStarted(leg=leg) | LegRinging(leg=leg) if leg.role in TARGET_ROLES:
                pass  # the target's phone rings: nothing is proven yet
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
                    if kind is TransferKind.SEMI_ATTENDED:
                        # The target may have answered as the phone pressed Transfer.
                        answered = _answered_target(call, LegRole.CONSULT_TARGET)
                        if answered is not None:
                            self._target_answered(answered, out)
            case ReferAnswered(leg=leg, code=code, status_line=line):
                call = leg.customer_leg
                if call in self._proven:
                    return
                if code < 300:
                    out.append((call, _ACCEPTED))
                else:
                    failure = TransferFailed("refer_rejected", line, FailureCause.REFER_REJECTED)
                    self._failed(call, failure, out)
            case ReferNotified(leg=leg, refer=refer, code=code, sipfrag=line):
                call = leg.customer_leg
                if code < 200:
                    if call not in self._proven:
                        out.append((call, TransferProgressed(ReferState.TRYING, line)))
                elif code < 300 and refer.consult_confirmed:
                    self._proven.add(call)
                    proof = ProofGrade.CONSULT_REPLACED
                    success = TransferSucceeded("notify_2xx_consult_answered", line, proof)
                    out.append((call, success))
                elif code < 300:
                    # Reported even after the target's answer proved it: the audit keeps the
                    # PBX's word, and the view its final sipfrag.
                    out.append((call, TransferReported("notify_2xx", line)))
                else:
                    cause = failure_cause_of_status(code)
                    self._failed(call, TransferFailed("notify_failure", line, cause), out)
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
            out.append((leg, _CUSTOMER_HUNG_UP))
        if answered or (change.prior is LegState.EARLY and not leg.outgoing):
            out.append((leg, _CALL_STATE[CallState.ENDED]))

    def _target_answered(self, leg: Leg, out: list[tuple[Leg, Observation]]) -> None:
        """A leg toward the target answered: proof, if that is where the transfer went."""
        call = leg.customer
        if call is None or call in self._proven or not _awaits(call, (_DECIDES[leg.role],)):
            return  # e.g. the consult's far leg answering an ordinary consult
        self._proven.add(call)
        out.append((call, _TARGET_ANSWERED))

    def _target_ended(self, change: LegEnded, out: list[tuple[Leg, Observation]]) -> None:
        """A leg toward the target ended unanswered: failure once no other one is left."""
        leg = change.leg
        call = leg.customer
        if change.prior is LegState.CONFIRMED or call is None or call in self._proven:
            return
        # Also after the PBX's failing NOTIFY: Asterisk sends its 503 and the CANCEL to the
        # ringing target in the same millisecond, in either order; the target's own leg names
        # the cause (no answer), the 503 only says the PBX gave up.
        if not any(r.kind is _DECIDES[leg.role] for r in call.all_refers()):
            return
        if any(
            t.role is leg.role and t.state is not LegState.TERMINATED for t in call.targets or ()
        ):
            return  # another leg toward the target (a ring group, a hunt) may still answer
        code = change.code
        cause = failure_cause_of_status(code) if code else FailureCause.TARGET_NO_ANSWER
        self._proven.add(call)
        self._failed(call, TransferFailed("target_leg_failed", change.status, cause), out)

    def _customer_dropped(self, change: LegEnded, out: list[tuple[Leg, Observation]]) -> None:
        """The PBX ended the customer's own dialog with a target-side Q.850 cause (busy,
        rejected, unanswered, unreachable) before any target answered: the transfer failed.

        A customer hanging up, or a plain "normal clearing", says nothing: after a transfer
        nobody saw the target answer, the customer may well have talked to the target first.
        """
        call = change.leg.customer
        if call is None or call in self._proven or not change.by_phone:
            return
        if change.q850 not in Q850_CAUSES or not _awaits(call, _DECIDES.values()):
            return
        self._proven.add(call)
        cause = failure_cause_of_q850(change.q850)
        self._failed(call, TransferFailed("customer_dropped", None, cause), out)

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
            out.append((call, _REPLACED))


# Which transfer a leg toward the target decides: a blind REFER's, for the leg carrying the
# customer; a semi-attended one's, for the consult's far leg.
_DECIDES = {LegRole.TARGET: TransferKind.BLIND, LegRole.CONSULT_TARGET: TransferKind.SEMI_ATTENDED}


def _awaits(call: Leg, kinds: Iterable[TransferKind]) -> bool:
    """A transfer of the call of one of these kinds has not failed: its target's side decides."""
    wanted = frozenset(kinds)
    return any(r.kind in wanted and r.state is not ReferState.FAILED for r in call.all_refers())


def _answered_target(call: Leg, role: LegRole) -> Leg | None:
    for leg in call.targets or ():
        if leg.role is role and leg.state is LegState.CONFIRMED:
            return leg
    return None


def _in_progress(call: Leg) -> bool:
    """A consult is up, or a REFER awaits its outcome (a REFER with no subscription excepted)."""
    consult = call.consult
    if consult is not None and consult.state is not LegState.TERMINATED:
        return True
    for refer in call.all_refers():
        if refer.state is ReferState.REQUESTED or (refer.state in _PENDING and refer.subscribed):
            return True
    return False
