"""What Asterisk's transfer events are worth, and the reported transfers the target settles.

No I/O. `AmiCallTracker` finds the legs an event names; this module says what evidence the
agent's customer leg gets. Asterisk 22, checked against the recordings in tests/fixtures/ami/
(docs/evidence.md has the whole picture):

- Strong, target-side (`TransferSucceeded`): after a blind transfer, the customer's channel's
  own `DialEnd DialStatus: ANSWER` (proof `target_answered`; a dialplan's early media or
  announcement before its Dial proves nothing); after a semi-attended transfer, the target's
  channel (`TransferTargetUniqueid`, else the consult's `DialBegin DestUniqueid`) going `Up`
  or a `DialEnd ANSWER` naming it (`target_answered`); `AttendedTransfer Result: Success`
  whose consult was answered before (`consult_replaced`: the agent spoke to the person who
  now has the customer).
- Weak, the PBX's own report (`TransferReported`, never proof): `BlindTransfer Result:
  Success` only means the customer was sent to the dialplan; `AttendedTransfer Result:
  Success` while the consult still rang (semi-attended, `DestType: App`) is a merge done
  before anyone answered, and the customer is dropped if the target then refuses.
- Failures (`TransferFailed` with a `FailureCause`): the customer's dial ending unanswered
  (`DialStatus` BUSY, NOANSWER, CONGESTION/CHANUNAVAIL, CANCEL; a 603 shows as NOANSWER and
  is told apart by the target channel's hangup cause 21), the customer's or the semi-attended
  target's channel hanging up first (Q.850 `Cause`: 17 busy, 21 rejected, 18/19 no answer,
  1/3/27/34/38 unavailable, else the customer went away), the customer hanging up during a
  consult (the tracker's own), and any other `Result` (`Fail`, `Invalid`, `Not Permitted`:
  `transfer_failed`).

A reported transfer is kept as a `Handoff` until the target's side settles it; handoffs expire
on the bridge's own clock (`received_at`), never on Asterisk's `Timestamp:`, which only dates
the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.ami.channels import AmiChannel, number
from bridge.ami.messages import AmiEvent
from bridge.evidence import (
    Observation,
    TransferFailed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import FailureCause, ProofGrade, TransferKind, failure_cause_of_q850
from bridge.untrusted import ascii_uint

HANDOFF_SECONDS = 3600.0  # a reported transfer nothing settled is forgotten after this long
MAX_HANDOFFS = 1024


@dataclass(slots=True)
class Handoff:
    """A transfer Asterisk reported done before the target's side said anything (a blind
    transfer sent to the dialplan, an attended one whose consult still rang): the target's
    channel settles it. Evidence goes to the agent's leg with the customer (`leg`)."""

    leg: str  # the transferring agent's customer leg (Uniqueid)
    transferee: str  # the customer's channel (Uniqueid)
    blind: bool  # blind: the transferee's own Dial settles it; else the target channel does
    since: float  # when the bridge received the report (its own clock): for expiry
    target: str | None = None  # the target's channel (Uniqueid), once known
    target_cause: int | None = None  # the target channel's hangup cause, once it asked


# Reported transfers the target's side has not settled yet, by the customer's (transferee's)
# channel Uniqueid; the tracker keeps one.
Handoffs = dict[str, Handoff]
# Evidence a settled handoff gives: the agent's customer leg (Uniqueid) and what it observed.
Settled = tuple[str, Observation]


@dataclass(frozen=True, slots=True)
class Reported:
    """What a transfer event gives the agent's customer leg: evidence, maybe a handoff to watch."""

    evidence: list[Observation]
    handoff: Handoff | None = None


# --- failure causes --------------------------------------------------------------------------

# `DialEnd DialStatus` of a dial that did not reach the target.
DIAL_STATUS_CAUSES = {
    "BUSY": FailureCause.TARGET_BUSY,
    "NOANSWER": FailureCause.TARGET_NO_ANSWER,
    "CONGESTION": FailureCause.TARGET_UNAVAILABLE,
    "CHANUNAVAIL": FailureCause.TARGET_UNAVAILABLE,
    "CANCEL": FailureCause.CUSTOMER_HUNG_UP,  # the caller (the customer) went away
}


def transfer_result(value: str | None) -> str:
    """A transfer event's `Result:` as a lower-case token (`not_permitted`)."""
    return (value or "unknown").strip().lower().replace(" ", "_")


def dial_failure(status: str, target_cause: int | None) -> FailureCause:
    """Why a dial towards the target ended unanswered: its `DialStatus`, except that a target
    that declined (cause 21) is told apart from a busy or unreachable one."""
    if status != "CANCEL" and target_cause == 21:
        return FailureCause.TARGET_REJECTED
    return DIAL_STATUS_CAUSES.get(status, FailureCause.TRANSFER_FAILED)


def cause_code(value: str | None) -> int | None:
    """`Cause: 17` -> 17; None when absent or not a number."""
    return ascii_uint(value, max_digits=3)  # ASCII only: "²".isdigit() is True


# --- transfer events -------------------------------------------------------------------------


def blind_transfer(event: AmiEvent, leg: AmiChannel, now: float) -> Reported:
    """`BlindTransfer` by the agent's customer leg `leg`; `now` is the bridge's clock."""
    result = transfer_result(event.get("Result"))
    requested = TransferRequested(TransferKind.BLIND, number(event.get("Extension")))
    if result != "success":
        return Reported([requested, TransferFailed(f"pbx_blind_{result}")])
    # Success only means the customer was sent to the dialplan: ringback, early media or an
    # announcement may follow, and the target may never answer. Its dial settles it.
    transferee = event.get("TransfereeUniqueid")
    handoff = Handoff(leg.uniqueid, transferee, blind=True, since=now) if transferee else None
    return Reported([requested, TransferReported("pbx_blind_transfer")], handoff)


def attended_transfer(
    event: AmiEvent,
    leg: AmiChannel,
    consult: AmiChannel | None,
    consult_state: str | None,
    now: float,
) -> Reported:
    """`AttendedTransfer` by the customer leg `leg`; `consult_state` is the event's snapshot
    of the consult-side transferer, used when the consult leg itself is not known."""
    result = transfer_result(event.get("Result"))
    target = number(event.get("TransferTargetCallerIDNum"))
    if target is None and consult is not None:
        target = consult.remote
    # Answered consult: the agent spoke to a person at the target, who now has the customer.
    # A consult that still rang (semi-attended) proves nothing: Asterisk merges at once.
    answered = consult.answered if consult is not None else consult_state == "Up"
    kind = TransferKind.ATTENDED if answered else TransferKind.SEMI_ATTENDED
    requested = TransferRequested(kind, target)
    if result != "success":
        return Reported([requested, TransferFailed(f"pbx_attended_{result}")])
    if answered:
        proof = ProofGrade.CONSULT_REPLACED
        return Reported([requested, TransferSucceeded("pbx_attended_transfer", proof=proof)])
    # Nobody has the customer yet; the target's channel answering (or not) settles it.
    early: list[Observation] = [requested, TransferReported("pbx_attended_transfer_early")]
    target_channel = event.get("TransferTargetUniqueid") or (
        consult.peer if consult is not None else None
    )
    if not target_channel:  # only the agent's word can settle it
        return Reported(early)
    transferee = event.get("TransfereeUniqueid") or f"semi:{leg.uniqueid}"
    handoff = Handoff(leg.uniqueid, transferee, blind=False, since=now)
    handoff.target = target_channel
    return Reported(early, handoff)


# --- reported transfers, settled by the target's side ----------------------------------------


def watch(handoffs: Handoffs, handoff: Handoff) -> None:
    """Wait for the target's side to settle `handoff` (the oldest goes past `MAX_HANDOFFS`)."""
    handoffs[handoff.transferee] = handoff
    while len(handoffs) > MAX_HANDOFFS:
        del handoffs[next(iter(handoffs))]


def expire(handoffs: Handoffs, now: float) -> None:
    """Forget reports nothing settled for long (lost events), on the bridge's own clock:
    Asterisk's `Timestamp` may be skewed, and a replayed capture's is old."""
    stale = [k for k, h in handoffs.items() if now - h.since > HANDOFF_SECONDS]
    for key in stale:
        del handoffs[key]


def of_target(handoffs: Handoffs, uniqueid: str) -> Handoff | None:
    """The handoff waiting on target channel `uniqueid`, if any."""
    if not uniqueid:
        return None
    for handoff in handoffs.values():
        if handoff.target == uniqueid:
            return handoff
    return None


def _answered(handoffs: Handoffs, handoff: Handoff) -> Settled:
    handoffs.pop(handoff.transferee, None)
    proof = ProofGrade.TARGET_ANSWERED
    return handoff.leg, TransferSucceeded("pbx_target_answered", proof=proof)


def _failed(handoffs: Handoffs, handoff: Handoff, reason: str, cause: FailureCause) -> Settled:
    handoffs.pop(handoff.transferee, None)
    return handoff.leg, TransferFailed(reason, cause=cause)


def dial_begin(handoffs: Handoffs, event: AmiEvent) -> None:
    """A blind transfer's customer channel dials: the last dial it makes is the target."""
    handoff = handoffs.get(event.get("Uniqueid") or "")
    if handoff is not None and handoff.blind:
        handoff.target = event.get("DestUniqueid") or None
        handoff.target_cause = None


def dial_end(handoffs: Handoffs, event: AmiEvent) -> list[Settled]:
    """A dial towards a handoff's target ended: answered, or why not."""
    status = (event.get("DialStatus") or "").upper()
    handoff = handoffs.get(event.get("Uniqueid") or "")
    if handoff is None or not handoff.blind:
        # A semi-attended transfer: the consult's dial towards the target goes on.
        handoff = of_target(handoffs, event.get("DestUniqueid") or "")
    if handoff is None:
        return []
    if status == "ANSWER":
        return [_answered(handoffs, handoff)]
    cause = dial_failure(status, handoff.target_cause)
    return [_failed(handoffs, handoff, f"pbx_dial_{status.lower() or 'unknown'}", cause)]


def target_up(handoffs: Handoffs, uniqueid: str) -> list[Settled]:
    """A semi-attended transfer's target channel answered: it has the customer now."""
    handoff = of_target(handoffs, uniqueid)
    if handoff is not None and not handoff.blind:
        return [_answered(handoffs, handoff)]
    return []


def hangup(handoffs: Handoffs, event: AmiEvent, final: bool) -> list[Settled]:
    """A channel a reported transfer waits on asks to hang up (`final`: it is gone)."""
    settled: list[Settled] = []
    uniqueid = event.get("Uniqueid") or ""
    cause = cause_code(event.get("Cause"))
    target_of = of_target(handoffs, uniqueid)
    if target_of is not None and cause:
        target_of.target_cause = cause
    if final and target_of is not None and not target_of.blind:
        # The semi-attended target went away unanswered (a blind transfer's own dial
        # reports it, or the customer's channel does).
        why = failure_cause_of_q850(cause)
        settled.append(_failed(handoffs, target_of, "pbx_target_hung_up", why))
    handoff = handoffs.get(uniqueid)
    if final and handoff is not None:
        # The customer's channel is gone before the target answered: the target's side
        # (a dialplan's Busy()/Hangup(17) after early media) or the customer hung up.
        why = failure_cause_of_q850(handoff.target_cause or cause)
        reason = "customer_hung_up" if why is FailureCause.CUSTOMER_HUNG_UP else "pbx_hangup"
        settled.append(_failed(handoffs, handoff, reason, why))
    return settled
