"""The session and transfer state machine: the seed's six rules and desktop steps, no I/O.

Every transition is a function `(session, input, now) -> Outcome`: the new session (or the same
one when nothing changed) and the audit entries to append. Refusals raise `TransferNotAllowed`
with the contract's error code. Phone evidence and desktop clicks are accepted in any order;
where they disagree the phone wins and the disagreement is kept as `transfer.conflict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from bridge.errors import TransferNotAllowed
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
    Action,
    Binding,
    CallState,
    ConfirmedBy,
    Conflict,
    ConsultState,
    PhoneProgress,
    ProofGrade,
    ReferState,
    Session,
    SessionStatus,
    Transfer,
    TransferKind,
    TransferState,
)

ON_CALL = frozenset({CallState.CONNECTED, CallState.ON_HOLD})
MAX_RESULT_LENGTH = 500

# The desktop steps of docs/api.md: action -> (states it may start from, state it leads to).
# `confirm`, `deny` and `acknowledge` have extra cases against phone evidence, handled below.
STEPS: dict[Action, tuple[frozenset[TransferState], TransferState]] = {
    Action.OPEN: (frozenset({TransferState.NONE, TransferState.FAILED}), TransferState.OFFERED),
    Action.DISMISS: (
        frozenset({TransferState.OFFERED, TransferState.DIALING, TransferState.CONFIRMING}),
        TransferState.NONE,
    ),
    Action.INTERNAL: (frozenset({TransferState.OFFERED}), TransferState.DIALING),
    Action.NEXT: (frozenset({TransferState.DIALING}), TransferState.CONFIRMING),
    Action.CONFIRM: (frozenset({TransferState.CONFIRMING}), TransferState.TRANSFERRED),
    Action.DENY: (frozenset({TransferState.CONFIRMING}), TransferState.NONE),
    Action.ACKNOWLEDGE: (frozenset({TransferState.TRANSFERRED}), TransferState.TRANSFERRED),
}

PHONE_PROVED = frozenset({ConfirmedBy.PHONE, ConfirmedBy.PHONE_AND_AGENT})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of a session's append-only trail."""

    at: str
    kind: str  # "desktop", "phone" or "system"
    event: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a transition: the session after it and what to append to its trail."""

    session: Session
    audit: tuple[AuditEntry, ...]
    changed: bool


def _bump(session: Session, now: str, **changes: Any) -> Session:
    return replace(session, version=session.version + 1, updated_at=now, **changes)


def _with_transfer(session: Session, transfer: Transfer) -> dict[str, Any]:
    status = session.status
    if status is not SessionStatus.ENDED:
        transferred = transfer.state is TransferState.TRANSFERRED
        status = SessionStatus.CALL_TRANSFERRED if transferred else SessionStatus.ACTIVE
    return {"transfer": transfer, "status": status}


# --- what the desktop may do now -------------------------------------------------------------


def open_refusal(session: Session, transfer_enabled: bool) -> TransferNotAllowed | None:
    """Why `Transfer Call` is disabled now (rules 2, 3 and 6), or None when it is enabled."""
    state = session.transfer.state
    if session.status is SessionStatus.ENDED:
        return TransferNotAllowed("invalid_step", "the session has ended", state="ended")
    if not transfer_enabled:
        return TransferNotAllowed(
            "transfer_disabled",
            "call transfer is not activated for this account; ask your call centre manager",
        )
    if state is TransferState.TRANSFERRED:
        return TransferNotAllowed(
            "already_transferred", "the call of this session has already been transferred once"
        )
    if state not in STEPS[Action.OPEN][0]:
        return TransferNotAllowed(
            "invalid_step", f"a transfer is already in progress ({state})", state=state.value
        )
    if session.call.state not in ON_CALL:
        return TransferNotAllowed(
            "not_on_call",
            f"there is no connected phone call in this session ({session.call.state})",
        )
    return None


# What each offered action needs besides the table's "from" states (rules 3 and 6 for `open`
# live in `open_refusal`). `actions` is derived from STEPS and these, in flow order.
GUARDS: dict[Action, Callable[[Session, bool], bool]] = {
    Action.OPEN: lambda session, enabled: open_refusal(session, enabled) is None,
    Action.INTERNAL: lambda session, enabled: session.call.state in ON_CALL,
    Action.ACKNOWLEDGE: lambda session, enabled: not session.transfer.acknowledged,
}


def available_actions(session: Session, transfer_enabled: bool) -> list[str]:
    """The contract's `actions`: what the desktop may offer now, in flow order."""
    if session.status is SessionStatus.ENDED:
        return []
    state = session.transfer.state
    actions = [
        f"transfer.{action}"
        for action, (allowed_from, _) in STEPS.items()
        if (action is Action.OPEN or state in allowed_from)
        and GUARDS.get(action, _always)(session, transfer_enabled)
    ]
    actions.append("end")
    return actions


def _always(session: Session, transfer_enabled: bool) -> bool:
    return True


# --- desktop steps ---------------------------------------------------------------------------


def desktop_step(session: Session, action: Action, *, transfer_enabled: bool, now: str) -> Outcome:
    """Apply one click of the seed's flow, or raise `TransferNotAllowed` with the contract code."""
    transfer = session.transfer
    state = transfer.state
    if session.status is SessionStatus.ENDED:
        raise TransferNotAllowed("invalid_step", "the session has ended", state="ended")
    if action is Action.OPEN:
        refusal = open_refusal(session, transfer_enabled)
        if refusal is not None:
            raise refusal
        # A new attempt: the failed one before it stays in the audit trail only.
        new = Transfer(state=TransferState.OFFERED)
        return _step(session, action, new, now)
    if action is Action.CONFIRM and state is not TransferState.CONFIRMING:
        return _late_confirm(session, now)
    if action is Action.DENY and state is not TransferState.CONFIRMING:
        return _late_deny(session, now)
    allowed_from, to_state = STEPS[action]
    if state not in allowed_from:
        raise TransferNotAllowed(
            "invalid_step", f"'{action}' does not fit the transfer state '{state}'", state=state
        )
    if action is Action.ACKNOWLEDGE:
        if transfer.acknowledged:
            return Outcome(session, (), False)
        return _step(session, action, replace(transfer, acknowledged=True), now)
    if action is Action.INTERNAL and session.call.state not in ON_CALL:
        raise TransferNotAllowed(
            "not_on_call",
            f"there is no connected phone call in this session ({session.call.state})",
        )
    if action is Action.CONFIRM:
        new = replace(
            transfer, state=to_state, confirmed_by=ConfirmedBy.AGENT, agent_said="confirm"
        )
    elif action is Action.DENY:
        new = replace(transfer, state=to_state, agent_said="deny")
    elif action is Action.DISMISS:
        new = replace(transfer, state=to_state, agent_said=None)
    else:
        new = replace(transfer, state=to_state)
    return _step(session, action, new, now)


def _step(session: Session, action: Action, transfer: Transfer, now: str) -> Outcome:
    new = _bump(session, now, **_with_transfer(session, transfer))
    entry = AuditEntry(
        now, "desktop", f"transfer.{action}", {"from": session.transfer.state, "to": transfer.state}
    )
    return Outcome(new, (entry,), True)


def _late_confirm(session: Session, now: str) -> Outcome:
    """'Yes' clicked on a screen the phone evidence has already overtaken."""
    transfer = session.transfer
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by is ConfirmedBy.PHONE:
        new = replace(transfer, confirmed_by=ConfirmedBy.PHONE_AND_AGENT, agent_said="confirm")
        return _step(session, Action.CONFIRM, new, now)
    if transfer.state is TransferState.FAILED:
        conflict = Conflict("confirm", "failed", now, transfer.phone.last_sipfrag)
        new = replace(transfer, conflict=conflict, agent_said="confirm")
        outcome = _step(session, Action.CONFIRM, new, now)
        return _add(outcome, AuditEntry(now, "system", "conflict", _conflict_detail(conflict)))
    raise TransferNotAllowed(
        "invalid_step",
        f"'confirm' does not fit the transfer state '{transfer.state}'",
        state=transfer.state,
    )


def _late_deny(session: Session, now: str) -> Outcome:
    """'No' clicked after the phone proved the transfer: a conflict, and the phone wins."""
    transfer = session.transfer
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        conflict = Conflict("deny", "succeeded", now, transfer.phone.last_sipfrag)
        new = replace(transfer, conflict=conflict, agent_said="deny")
        outcome = _step(session, Action.DENY, new, now)
        return _add(outcome, AuditEntry(now, "system", "conflict", _conflict_detail(conflict)))
    raise TransferNotAllowed(
        "invalid_step",
        f"'deny' does not fit the transfer state '{transfer.state}'",
        state=transfer.state,
    )


def _add(outcome: Outcome, entry: AuditEntry) -> Outcome:
    return Outcome(outcome.session, (*outcome.audit, entry), outcome.changed)


def _conflict_detail(conflict: Conflict) -> dict[str, Any]:
    return {"desktop": conflict.desktop, "phone": conflict.phone, "detail": conflict.detail}


def end_session(session: Session, result: str, *, now: str) -> Outcome:
    """Set the result and end the session (rule 4); this is what unblocks the agent (rule 5)."""
    if session.status is SessionStatus.ENDED:
        raise TransferNotAllowed("invalid_step", "the session has already ended", state="ended")
    new = _bump(session, now, status=SessionStatus.ENDED, result=result, ended_at=now)
    entry = AuditEntry(now, "desktop", "end", {"result": result, "status_before": session.status})
    return Outcome(new, (entry,), True)


def apply_binding(
    session: Session,
    binding: Binding,
    call_id: str | None,
    call_state: CallState | None,
    *,
    now: str,
) -> Outcome:
    """Tie the session to a phone call (or say it cannot be), as correlation decided."""
    call = session.call
    if call.binding is binding and (call_id is None or call.sip_call_id == call_id):
        return Outcome(session, (), False)
    new_call = replace(call, binding=binding)
    if call_id is not None:
        new_call = replace(new_call, sip_call_id=call_id)
    if call_state is not None and call_state is not call.state:
        new_call = replace(new_call, state=call_state, since=now)
    entry = AuditEntry(
        now, "system", "call_binding", {"binding": binding.value, "sip_call_id": call_id}
    )
    return Outcome(_bump(session, now, call=new_call), (entry,), True)


# --- phone evidence --------------------------------------------------------------------------


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
    transfer = session.transfer
    match obs:
        case CallStateChanged(state=state):
            if session.call.state is state:
                return Outcome(session, (_noted(entry, "duplicate"),), False)
            if session.call.state is CallState.ENDED:
                # A session has one call; a late report from a slower source cannot revive it.
                return Outcome(session, (_noted(entry, "after_call_ended"),), False)
            call = replace(session.call, state=state, since=evidence.at)
            return Outcome(_bump(session, now, call=call), (entry,), True)
        case ConsultChanged(state=state, target=target):
            if transfer.phone.consult is state:
                return Outcome(session, (_noted(entry, "duplicate"),), False)
            if not _consult_moves_on(transfer.phone.consult, state):
                return Outcome(session, (_noted(entry, "stale"),), False)
            phone = replace(transfer.phone, consult=state)
            new_transfer = replace(transfer, phone=phone, target=target or transfer.target)
            return _phone_change(session, new_transfer, entry, now)
        case TransferRequested(kind=kind, target=target):
            if (
                transfer.state is TransferState.TRANSFERRED
                and transfer.confirmed_by in PHONE_PROVED
            ):
                return Outcome(session, (_noted(entry, "already_transferred"),), False)
            if _same_attempt_elsewhere(transfer, evidence, now):
                return Outcome(session, (_noted(entry, "same_attempt_other_source"),), False)
            if _reported_attempt(transfer):
                # The PBX already reported this attempt; a slower source's view of its request
                # must not turn the report back into a request. A semi-attended kind refines it.
                if kind is TransferKind.SEMI_ATTENDED and transfer.kind is not kind:
                    return _phone_change(session, replace(transfer, kind=kind), entry, now)
                return Outcome(session, (_noted(entry, "same_attempt"),), False)
            if transfer.kind is TransferKind.SEMI_ATTENDED and kind is TransferKind.ATTENDED:
                kind = transfer.kind  # another source saw the same REFER; one knew the consult rang
            phone = replace(transfer.phone, refer=ReferState.REQUESTED)
            if transfer.phone.refer is ReferState.FAILED:
                # A new attempt on the phone: the last one's outcome stays in the audit only.
                phone = PhoneProgress(consult=transfer.phone.consult, refer=ReferState.REQUESTED)
            new_transfer = replace(
                transfer, kind=kind, target=target or transfer.target, phone=phone
            )
            if new_transfer == transfer:
                return Outcome(session, (_noted(entry, "duplicate"),), False)
            return _phone_change(session, new_transfer, entry, now)
        case TransferProgressed(refer=refer, sipfrag=sipfrag):
            if transfer.phone.refer in (ReferState.SUCCEEDED, ReferState.FAILED):
                return Outcome(session, (_noted(entry, "after_final"),), False)
            phone = replace(
                transfer.phone, refer=refer, last_sipfrag=sipfrag or transfer.phone.last_sipfrag
            )
            if phone == transfer.phone:
                return Outcome(session, (_noted(entry, "duplicate"),), False)
            return _phone_change(session, replace(transfer, phone=phone), entry, now)
        case TransferReported(sipfrag=sipfrag, reason=reason):
            return _phone_reported(session, reason, sipfrag, evidence, entry, now)
        case TransferSucceeded():
            return _phone_succeeded(session, obs, evidence, entry, now)
        case TransferFailed():
            return _phone_failed(session, obs, evidence, entry, now)
    raise AssertionError(f"unknown observation {obs!r}")  # pragma: no cover


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


def _final_status(line: str | None) -> bool:
    """True for a final SIP status line (``SIP/2.0 200 OK``, ``SIP/2.0 486 Busy Here``)."""
    parts = (line or "").split(" ", 2)
    return len(parts) > 1 and parts[1].isascii() and parts[1].isdigit() and int(parts[1]) >= 200


def _noted_sipfrag(
    session: Session, sipfrag: str | None, entry: AuditEntry, note: str, now: str
) -> Outcome:
    """Evidence that settles nothing new; only a final sipfrag where the view shows a
    provisional one (the later, stronger wire fact) is taken, whichever source came first."""
    noted = _noted(entry, note)
    phone = session.transfer.phone
    if _final_status(sipfrag) and not _final_status(phone.last_sipfrag):
        new_phone = replace(phone, last_sipfrag=sipfrag)
        return _phone_change(session, replace(session.transfer, phone=new_phone), noted, now)
    return Outcome(session, (noted,), False)


def _phone_change(session: Session, transfer: Transfer, entry: AuditEntry, now: str) -> Outcome:
    new = _bump(session, now, **_with_transfer(session, transfer))
    return Outcome(new, (entry,), True)


def _phone_reported(
    session: Session,
    reason: str,
    sipfrag: str | None,
    evidence: PhoneEvidence,
    entry: AuditEntry,
    now: str,
) -> Outcome:
    """The PBX says the transfer went through. Shown, never taken as proof: the agent's Yes/No
    (or later target-side evidence) decides."""
    transfer = session.transfer
    phone = transfer.phone
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        if phone.pbx_reported_at is None:
            # The PBX's report after the target's answer: kept, so reports can show both times.
            new_phone = replace(
                phone,
                pbx_reported_at=evidence.at,
                last_sipfrag=sipfrag if _final_status(sipfrag) else phone.last_sipfrag,
            )
            noted = _noted(entry, "after_success")
            return _phone_change(session, replace(transfer, phone=new_phone), noted, now)
        return _noted_sipfrag(session, sipfrag, entry, "after_success", now)
    if phone.refer is ReferState.FAILED or phone.proof is not ProofGrade.NONE:
        note = "after_final" if phone.refer is ReferState.FAILED else "duplicate"
        return _noted_sipfrag(session, sipfrag, entry, note, now)
    new_phone = replace(
        phone,
        refer=ReferState.SUCCEEDED,
        last_sipfrag=sipfrag or phone.last_sipfrag,
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
        return _noted_sipfrag(session, obs.sipfrag, entry, "duplicate", now)
    entries = [entry]
    if transfer.phone.refer is ReferState.FAILED and _other_source(transfer, evidence):
        # Same attempt (no new request since), another source proved the opposite. Proof that
        # the customer reached the target wins; the disagreement is kept.
        entries.append(_disagreement(evidence.source, transfer.phone.proved_by, now))
    phone = replace(
        transfer.phone,
        refer=ReferState.SUCCEEDED,
        last_sipfrag=obs.sipfrag or transfer.phone.last_sipfrag,
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
        entries.append(AuditEntry(now, "system", "conflict", _conflict_detail(conflict)))
    new = _bump(session, now, **_with_transfer(session, new_transfer))
    return Outcome(new, tuple(entries), True)


def _phone_failed(
    session: Session, obs: TransferFailed, evidence: PhoneEvidence, entry: AuditEntry, now: str
) -> Outcome:
    transfer = session.transfer
    if transfer.state is TransferState.TRANSFERRED and transfer.confirmed_by in PHONE_PROVED:
        noted = _noted(entry, "after_success")
        if _other_source(transfer, evidence):
            # The customer was proved to reach the target; another source says it failed.
            return Outcome(
                session,
                (noted, _disagreement(transfer.phone.proved_by, evidence.source, now)),
                False,
            )
        return Outcome(session, (noted,), False)
    if transfer.state is TransferState.FAILED and transfer.phone.refer is ReferState.FAILED:
        return _noted_sipfrag(session, obs.sipfrag, entry, "duplicate", now)
    phone = replace(
        transfer.phone,
        refer=ReferState.FAILED,
        last_sipfrag=obs.sipfrag or transfer.phone.last_sipfrag,
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
        entries.append(AuditEntry(now, "system", "conflict", _conflict_detail(conflict)))
    new = _bump(session, now, **_with_transfer(session, new_transfer))
    return Outcome(new, tuple(entries), True)
