"""Phone evidence applied to a session, in any order against the desktop's clicks; no I/O.

Target-side proof (`TransferSucceeded`) makes the transfer `transferred` by the phone; a PBX's
report (`TransferReported`) is shown but decides nothing; a failure fails the attempt with its
cause. Where the agent's answer and the phone disagree the phone wins and the disagreement is
kept as `transfer.conflict`; where two sources disagree, `sources_disagree` is audited.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
    describe,
)
from bridge.model import (
    CallState,
    ConfirmedBy,
    Conflict,
    ConsultState,
    FailureCause,
    PhoneProgress,
    ProofGrade,
    ReferState,
    Session,
    SessionStatus,
    Transfer,
    TransferKind,
    TransferState,
)
from bridge.session.outcome import (
    PHONE_PROVED,
    AuditEntry,
    Outcome,
    bump,
    conflict_detail,
    with_transfer,
)
from bridge.sip import SipParseError
from bridge.sip.sipfrag import parse_status_line


def apply_evidence(session: Session, evidence: PhoneEvidence, *, now: str) -> Outcome:
    """Apply one piece of phone evidence; every piece lands in the audit trail."""
    obs = evidence.observation
    detail: dict[str, Any] = {
        "source": evidence.source,
        "observed_at": evidence.at,
        **describe(obs),
    }
    entry = AuditEntry(now, "phone", detail.pop("type"), detail)
    if session.status is SessionStatus.ENDED:
        return Outcome(session, (_noted(entry, "session_ended"),), False)
    match obs:
        case CallStateChanged():
            return _call_state(session, obs, evidence, entry, now)
        case ConsultChanged():
            return _consult(session, obs, entry, now)
        case TransferRequested():
            return _requested(session, obs, evidence, entry, now)
        case TransferProgressed():
            return _progressed(session, obs, entry, now)
        case TransferReported(sipfrag=sipfrag, reason=reason):
            return _phone_reported(session, reason, sipfrag, evidence, entry, now)
        case TransferSucceeded():
            return _phone_succeeded(session, obs, evidence, entry, now)
        case TransferFailed():
            return _phone_failed(session, obs, evidence, entry, now)
    raise AssertionError(f"unknown observation {obs!r}")  # pragma: no cover


def _call_state(
    session: Session, obs: CallStateChanged, evidence: PhoneEvidence, entry: AuditEntry, now: str
) -> Outcome:
    if session.call.state is obs.state:
        return Outcome(session, (_noted(entry, "duplicate"),), False)
    if session.call.state is CallState.ENDED:
        # A session has one call; a late report from a slower source cannot revive it.
        return Outcome(session, (_noted(entry, "after_call_ended"),), False)
    call = replace(session.call, state=obs.state, since=evidence.at)
    return Outcome(bump(session, now, call=call), (entry,), True)


def _consult(session: Session, obs: ConsultChanged, entry: AuditEntry, now: str) -> Outcome:
    transfer = session.transfer
    if transfer.phone.consult is obs.state:
        return Outcome(session, (_noted(entry, "duplicate"),), False)
    if not _consult_moves_on(transfer.phone.consult, obs.state):
        return Outcome(session, (_noted(entry, "stale"),), False)
    phone = replace(transfer.phone, consult=obs.state)
    new_transfer = replace(transfer, phone=phone, target=obs.target or transfer.target)
    return _phone_change(session, new_transfer, entry, now)


def _requested(
    session: Session, obs: TransferRequested, evidence: PhoneEvidence, entry: AuditEntry, now: str
) -> Outcome:
    transfer = session.transfer
    kind = obs.kind
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        return Outcome(session, (_noted(entry, "already_transferred"),), False)
    if _same_attempt_elsewhere(transfer, evidence, now):
        return Outcome(session, (_noted(entry, "same_attempt_other_source"),), False)
    if _reported_attempt(transfer):
        # The PBX already reported this attempt; a slower source's view of its request must not
        # turn the report back into a request. A semi-attended kind refines it.
        if kind is TransferKind.SEMI_ATTENDED and transfer.kind is not kind:
            return _phone_change(session, replace(transfer, kind=kind), entry, now)
        return Outcome(session, (_noted(entry, "same_attempt"),), False)
    if transfer.kind is TransferKind.SEMI_ATTENDED and kind is TransferKind.ATTENDED:
        kind = transfer.kind  # another source saw the same REFER; one knew the consult rang
    phone = replace(transfer.phone, refer=ReferState.REQUESTED)
    if transfer.phone.refer is ReferState.FAILED:
        # A new attempt on the phone: the last one's outcome stays in the audit only.
        phone = PhoneProgress(consult=transfer.phone.consult, refer=ReferState.REQUESTED)
    new_transfer = replace(transfer, kind=kind, target=obs.target or transfer.target, phone=phone)
    if new_transfer == transfer:
        return Outcome(session, (_noted(entry, "duplicate"),), False)
    return _phone_change(session, new_transfer, entry, now)


def _progressed(session: Session, obs: TransferProgressed, entry: AuditEntry, now: str) -> Outcome:
    transfer = session.transfer
    if transfer.phone.refer in (ReferState.SUCCEEDED, ReferState.FAILED):
        # Another source may have decided first: the view still shows the wire's sipfrag.
        return _noted_sipfrag(session, obs.sipfrag, entry, "after_final", now)
    phone = replace(
        transfer.phone,
        refer=obs.refer,
        last_sipfrag=stronger_sipfrag(transfer.phone.last_sipfrag, obs.sipfrag),
    )
    if phone == transfer.phone:
        return Outcome(session, (_noted(entry, "duplicate"),), False)
    return _phone_change(session, replace(transfer, phone=phone), entry, now)


# --- several sources about one transfer --------------------------------------------------------
# The same transfer may be reported by several sources (HEP capture and the PBX's AMI): either
# alone is enough, the first final proof counts, later ones are duplicates, and a source that
# contradicts the final outcome is kept in the audit trail as `sources_disagree`.

SAME_ATTEMPT_SECONDS = 5.0
CONSULT_ORDER = {
    ConsultState.NONE: 0,
    ConsultState.DIALING: 1,
    ConsultState.RINGING: 2,
    ConsultState.ANSWERED: 3,
    ConsultState.ENDED: 4,
}


def _other_source(transfer: Transfer, evidence: PhoneEvidence) -> bool:
    proved_by = transfer.phone.proved_by
    return proved_by is not None and proved_by != evidence.source


def _seconds_between(a: str, b: str) -> float | None:
    try:
        return abs((datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds())
    except (TypeError, ValueError):
        return None


def _same_attempt_elsewhere(transfer: Transfer, evidence: PhoneEvidence, now: str) -> bool:
    """A transfer request another source already saw finish: the same attempt, not a new one.

    A new attempt after a failure is allowed (rule 6); what tells it apart from a slower
    source's report of the finished one is the source and the time (seconds apart), measured
    on the bridge's own clock: sources' clocks differ, and a replayed capture's are old.
    """
    if transfer.phone.refer not in (ReferState.SUCCEEDED, ReferState.FAILED):
        return False
    decided_at = transfer.phone.decided_at
    if not _other_source(transfer, evidence) or decided_at is None:
        return False
    gap = _seconds_between(now, decided_at)
    return gap is not None and gap <= SAME_ATTEMPT_SECONDS


def _reported_attempt(transfer: Transfer) -> bool:
    """The PBX reported success for the current attempt and nothing settled it yet."""
    return (
        transfer.phone.proof is ProofGrade.PBX_REPORTED
        and transfer.phone.refer is ReferState.SUCCEEDED
        and transfer.state is not TransferState.FAILED
    )


def _consult_moves_on(current: ConsultState, new: ConsultState) -> bool:
    """Consult progress only moves forward; after `ended` only a new dial starts over."""
    if current is ConsultState.ENDED:
        return new is ConsultState.DIALING
    return CONSULT_ORDER[new] > CONSULT_ORDER[current]


def _disagreement(succeeded_source: str | None, failed_source: str | None, now: str) -> AuditEntry:
    """One source proved the customer reached the target, another said the transfer failed."""
    detail = {
        "kept": "succeeded",
        "kept_source": succeeded_source,
        "other": "failed",
        "other_source": failed_source,
    }
    return AuditEntry(now, "system", "sources_disagree", detail)


def _noted(entry: AuditEntry, note: str) -> AuditEntry:
    return replace(entry, detail={**entry.detail, "ignored": note})


def _sipfrag_rank(line: str) -> tuple[int, int] | None:
    """Provisional ones by how far on (100 < 180 < 183 < the REFER's 202), below a 2xx (at
    most the PBX's report of success), below an error status (the attempt failed; nothing later
    undoes that)."""
    try:
        code, _ = parse_status_line(line)
    except SipParseError:
        return None
    if code < 200:
        return (0, code)
    if code == 202:  # the REFER's acceptance: progress (an INVITE is never answered 202)
        return (0, 199)
    return (1, 0) if code < 300 else (2, 0)


def stronger_sipfrag(current: str | None, new: str | None) -> str | None:
    """The sipfrag the view shows: the strongest wire fact, the same whichever source or
    message came first (:func:`_sipfrag_rank`; of two equally strong ones the first stays, and
    a new attempt starts with none)."""
    if not new:
        return current
    if not current:
        return new
    new_rank = _sipfrag_rank(new)
    if new_rank is None:
        return current
    current_rank = _sipfrag_rank(current)
    return new if current_rank is None or new_rank > current_rank else current


def _noted_sipfrag(
    session: Session,
    sipfrag: str | None,
    entry: AuditEntry,
    note: str,
    now: str,
    *,
    reported_at: str | None = None,
) -> Outcome:
    """Evidence that settles nothing new. What it says about the wire is still merged into the
    view as it would be had it come first: its sipfrag when it is the stronger one
    (:func:`stronger_sipfrag`), and ``reported_at`` (a PBX report's time) when it is earlier
    than the one shown."""
    noted = _noted(entry, note)
    phone = session.transfer.phone
    new_phone = replace(
        phone,
        last_sipfrag=stronger_sipfrag(phone.last_sipfrag, sipfrag),
        pbx_reported_at=_earliest(phone.pbx_reported_at, reported_at),
    )
    if new_phone != phone:
        return _phone_change(session, replace(session.transfer, phone=new_phone), noted, now)
    return Outcome(session, (noted,), False)


def _earliest(current: str | None, new: str | None) -> str | None:
    """The earlier of two RFC 3339 times (either may be None; unreadable ones lose)."""
    if current is None or new is None:
        return current or new
    return new if _before(new, "", current, "") else current


def _before(at: str, source: str, other_at: str, other_source: str) -> bool:
    """Whether (at, source) sorts before (other_at, other_source): by the sources' own times,
    then by name, so two sources' reports of one outcome give one view in any order."""
    try:
        a, b = datetime.fromisoformat(at), datetime.fromisoformat(other_at)
    except (TypeError, ValueError):
        return False
    return (a, source) < (b, other_source)


def _same_outcome_earlier(
    session: Session,
    evidence: PhoneEvidence,
    changes: dict[str, Any],
    sipfrag: str | None,
    entry: AuditEntry,
    now: str,
) -> Outcome:
    """Another source's report of the outcome already shown (success or failure of the same
    attempt): the view names the source that saw it first by its own clock, so it does not
    depend on which report reached the bridge first."""
    phone = session.transfer.phone
    shown = phone.final_at
    if (
        not _other_source(session.transfer, evidence)
        or shown is None
        or not _before(evidence.at, evidence.source, shown, phone.proved_by or "")
    ):
        return _noted_sipfrag(session, sipfrag, entry, "duplicate", now)
    new_phone = replace(
        phone,
        proved_by=evidence.source,
        final_at=evidence.at,
        last_sipfrag=stronger_sipfrag(phone.last_sipfrag, sipfrag),
        **changes,
    )
    noted = _noted(entry, "duplicate")
    return _phone_change(session, replace(session.transfer, phone=new_phone), noted, now)


def _phone_change(session: Session, transfer: Transfer, entry: AuditEntry, now: str) -> Outcome:
    new = bump(session, now, **with_transfer(session, transfer))
    return Outcome(new, (entry,), True)


def _phone_reported(
    session: Session,
    reason: str,
    sipfrag: str | None,
    evidence: PhoneEvidence,
    entry: AuditEntry,
    now: str,
) -> Outcome:
    """The PBX says the transfer went through. Shown, not taken as proof: the agent's Yes/No (or
    later target-side evidence) decides. The one exception is an attended transfer whose consult
    the session saw answered: then the report is that answered consult's replacement."""
    transfer = session.transfer
    phone = transfer.phone
    if transfer.kind is TransferKind.ATTENDED and phone.consult is ConsultState.ANSWERED:
        # The session itself knows the consult was answered (a source reported it, perhaps
        # before the bridge restarted): the PBX's success for it is a replaced, answered consult.
        proof = TransferSucceeded(reason, sipfrag, ProofGrade.CONSULT_REPLACED)
        taken = replace(entry, detail={**entry.detail, "taken_as": "consult_replaced"})
        return _phone_succeeded(session, proof, evidence, taken, now)
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        if phone.pbx_reported_at is None:
            # The PBX's report after the target's answer: kept, so reports can show both times.
            new_phone = replace(
                phone,
                pbx_reported_at=evidence.at,
                last_sipfrag=stronger_sipfrag(phone.last_sipfrag, sipfrag),
            )
            noted = _noted(entry, "after_success")
            return _phone_change(session, replace(transfer, phone=new_phone), noted, now)
        return _noted_sipfrag(
            session, sipfrag, entry, "after_success", now, reported_at=evidence.at
        )
    if phone.refer is ReferState.FAILED or phone.proof is not ProofGrade.NONE:
        note = "after_final" if phone.refer is ReferState.FAILED else "duplicate"
        return _noted_sipfrag(session, sipfrag, entry, note, now, reported_at=evidence.at)
    new_phone = replace(
        phone,
        refer=ReferState.SUCCEEDED,
        last_sipfrag=stronger_sipfrag(phone.last_sipfrag, sipfrag),
        proof=ProofGrade.PBX_REPORTED,
        proof_reason=reason,
        pbx_reported_at=evidence.at,
    )
    return _phone_change(session, replace(transfer, phone=new_phone), entry, now)


def _phone_succeeded(
    session: Session, obs: TransferSucceeded, evidence: PhoneEvidence, entry: AuditEntry, now: str
) -> Outcome:
    transfer = session.transfer
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        changes = {"proof": obs.proof, "proof_reason": obs.reason, "handoff_at": evidence.at}
        return _same_outcome_earlier(session, evidence, changes, obs.sipfrag, entry, now)
    entries = [entry]
    if transfer.phone.refer is ReferState.FAILED and _other_source(transfer, evidence):
        # Same attempt (no new request since), another source proved the opposite. Proof that
        # the customer reached the target wins; the disagreement is kept.
        entries.append(_disagreement(evidence.source, transfer.phone.proved_by, now))
    phone = replace(
        transfer.phone,
        refer=ReferState.SUCCEEDED,
        last_sipfrag=stronger_sipfrag(transfer.phone.last_sipfrag, obs.sipfrag),
        proved_by=evidence.source,
        final_at=evidence.at,
        decided_at=now,
        proof=obs.proof,
        proof_reason=obs.reason,
        failure=None,
        handoff_at=evidence.at,
    )
    agent_confirmed = transfer.state is TransferState.TRANSFERRED  # confirmed by the agent alone
    new_transfer = replace(
        transfer,
        state=TransferState.TRANSFERRED,
        phone=phone,
        confirmed_by=ConfirmedBy.PHONE_AND_AGENT if agent_confirmed else ConfirmedBy.PHONE,
        conflict=None if agent_confirmed else transfer.conflict,
    )
    if transfer.agent_said == "deny":
        conflict = Conflict("deny", "succeeded", now, phone.last_sipfrag)
        new_transfer = replace(new_transfer, conflict=conflict)
        entries.append(AuditEntry(now, "system", "conflict", conflict_detail(conflict)))
    new = bump(session, now, **with_transfer(session, new_transfer))
    return Outcome(new, tuple(entries), True)


# How much a failure cause says: the target's own answer (or the customer's own hang-up) over
# the PBX's word for it (a NOTIFY 503 is Asterisk's "gave up" for busy, refused and unanswered
# alike), over a cause nobody named.
_CAUSE_RANK: dict[FailureCause | None, int] = {
    FailureCause.TARGET_BUSY: 2,
    FailureCause.TARGET_REJECTED: 2,
    FailureCause.TARGET_NO_ANSWER: 2,
    FailureCause.CUSTOMER_HUNG_UP: 2,
    FailureCause.TARGET_UNAVAILABLE: 1,
    FailureCause.REFER_REJECTED: 1,
    FailureCause.TRANSFER_FAILED: 0,
}


def _phone_failed(
    session: Session, obs: TransferFailed, evidence: PhoneEvidence, entry: AuditEntry, now: str
) -> Outcome:
    transfer = session.transfer
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        if _other_source(transfer, evidence):
            # The customer was proved to reach the target; another source says it failed. The
            # proof stands; the wire's sipfrag is shown as it would be had this come first.
            outcome = _noted_sipfrag(session, obs.sipfrag, entry, "after_success", now)
            disagree = _disagreement(transfer.phone.proved_by, evidence.source, now)
            return replace(outcome, audit=(*outcome.audit, disagree))
        return Outcome(session, (_noted(entry, "after_success"),), False)
    if transfer.state is TransferState.FAILED and transfer.phone.refer is ReferState.FAILED:
        if _CAUSE_RANK.get(obs.cause, 0) > _CAUSE_RANK.get(transfer.phone.failure, 0):
            # The target's own side names the cause the PBX's report left vague (its NOTIFY 503
            # came before the CANCEL to the ringing target): the strongest fact is shown,
            # whichever came first.
            phone = replace(
                transfer.phone,
                failure=obs.cause,
                proved_by=evidence.source,
                final_at=evidence.at,
                last_sipfrag=stronger_sipfrag(transfer.phone.last_sipfrag, obs.sipfrag),
            )
            noted = _noted(entry, "target_side_cause")
            return _phone_change(session, replace(transfer, phone=phone), noted, now)
        changes = {"failure": obs.cause}
        return _same_outcome_earlier(session, evidence, changes, obs.sipfrag, entry, now)
    phone = replace(
        transfer.phone,
        refer=ReferState.FAILED,
        last_sipfrag=stronger_sipfrag(transfer.phone.last_sipfrag, obs.sipfrag),
        proved_by=evidence.source,
        final_at=evidence.at,
        decided_at=now,
        failure=obs.cause,
    )
    new_transfer = replace(
        transfer, state=TransferState.FAILED, phone=phone, confirmed_by=None, acknowledged=False
    )
    entries = [entry]
    if transfer.agent_said == "confirm":
        conflict = Conflict("confirm", "failed", now, phone.last_sipfrag)
        new_transfer = replace(new_transfer, conflict=conflict)
        entries.append(AuditEntry(now, "system", "conflict", conflict_detail(conflict)))
    new = bump(session, now, **with_transfer(session, new_transfer))
    return Outcome(new, tuple(entries), True)
