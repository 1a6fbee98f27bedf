"""The session and transfer state machine: the seed's six rules and desktop steps, no I/O.

Every transition is a function `(session, input, now) -> Outcome`: the new session (or the same
one when nothing changed) and the audit entries to append. Refusals raise `TransferNotAllowed`
with the contract's error code. Phone evidence and desktop clicks are accepted in any order;
where they disagree the phone wins and the disagreement is kept as `transfer.conflict`.
Phone evidence is applied by `bridge.session.phone`; both share `bridge.session.outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bridge.errors import TransferNotAllowed
from bridge.model import (
    Action,
    Binding,
    CallCandidate,
    CallState,
    ConfirmedBy,
    Conflict,
    Session,
    SessionStatus,
    Transfer,
    TransferState,
)
from bridge.session.outcome import (
    PHONE_PROVED,
    AuditEntry,
    Outcome,
    add,
    bump,
    conflict_detail,
    with_transfer,
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
    new = bump(session, now, **with_transfer(session, transfer))
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
        return add(outcome, AuditEntry(now, "system", "conflict", conflict_detail(conflict)))
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
        return add(outcome, AuditEntry(now, "system", "conflict", conflict_detail(conflict)))
    raise TransferNotAllowed(
        "invalid_step",
        f"'deny' does not fit the transfer state '{transfer.state}'",
        state=transfer.state,
    )


def end_session(session: Session, result: str, *, now: str) -> Outcome:
    """Set the result and end the session (rule 4); this is what unblocks the agent (rule 5)."""
    if session.status is SessionStatus.ENDED:
        raise TransferNotAllowed("invalid_step", "the session has already ended", state="ended")
    new = bump(session, now, status=SessionStatus.ENDED, result=result, ended_at=now)
    entry = AuditEntry(now, "desktop", "end", {"result": result, "status_before": session.status})
    return Outcome(new, (entry,), True)


def apply_binding(
    session: Session,
    binding: Binding,
    call_id: str | None,
    call_state: CallState | None,
    *,
    now: str,
    reason: str | None = None,
    candidates: tuple[CallCandidate, ...] = (),
    previous: str | None = None,
    skipped: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    """Tie the session to a phone call (or say it cannot be), as correlation decided.

    An `ambiguous` or `none` binding names no call (`sip_call_id` null) and an `ambiguous` one
    lists its `candidates`; the audit entry says why (`reason`), which call the session held
    before (`previous_call_id`) and which calls were passed over as stale (`skipped`).
    """
    call = session.call
    if binding in (Binding.AMBIGUOUS, Binding.NONE):
        call_id = None
    else:
        candidates = ()
    if (
        call.binding is binding
        and call.candidates == candidates
        and (call_id is None or call.sip_call_id == call_id)
    ):
        return Outcome(session, (), False)
    new_call = replace(call, binding=binding, candidates=candidates)
    if binding in (Binding.AMBIGUOUS, Binding.NONE) and call.binding is Binding.PHONE_AND_NUMBER:
        new_call = replace(new_call, sip_call_id=None)  # the call it held is not known to be it
    if call_id is not None:
        new_call = replace(new_call, sip_call_id=call_id)
    if call_state is not None and call_state is not call.state:
        new_call = replace(new_call, state=call_state, since=now)
    detail: dict[str, Any] = {"binding": binding.value, "sip_call_id": call_id}
    if reason is not None:
        detail["reason"] = reason
    if previous is not None and previous != call_id:
        detail["previous_call_id"] = previous
    if candidates:
        detail["candidates"] = [c.sip_call_id for c in candidates]
    if skipped:
        detail["skipped"] = [{"sip_call_id": cid, "reason": why} for cid, why in skipped]
    entry = AuditEntry(now, "system", "call_binding", detail)
    return Outcome(bump(session, now, call=new_call), (entry,), True)


def pick_call(session: Session, call_id: str, call_state: CallState | None, *, now: str) -> Outcome:
    """The desktop names the session's call (`PATCH /v1/sessions/{id}`), e.g. one of the
    candidates of an `ambiguous` session: bound by Call-ID from then on, as if given at open."""
    if session.status is SessionStatus.ENDED:
        raise TransferNotAllowed("invalid_step", "the session has ended", state="ended")
    if session.transfer.state is TransferState.TRANSFERRED:
        raise TransferNotAllowed(
            "already_transferred", "the call of this session has already been transferred"
        )
    call = session.call
    if call.binding is Binding.CALL_ID and call.sip_call_id == call_id:
        return Outcome(session, (), False)
    new_call = replace(call, binding=Binding.CALL_ID, sip_call_id=call_id, candidates=())
    if call_state is not None and call_state is not call.state:
        new_call = replace(new_call, state=call_state, since=now)
    detail: dict[str, Any] = {
        "binding": Binding.CALL_ID.value,
        "sip_call_id": call_id,
        "reason": "desktop_choice",
    }
    if call.sip_call_id is not None and call.sip_call_id != call_id:
        detail["previous_call_id"] = call.sip_call_id
    if call.candidates:
        detail["candidates"] = [c.sip_call_id for c in call.candidates]
    entry = AuditEntry(now, "desktop", "call_binding", detail)
    return Outcome(bump(session, now, call=new_call), (entry,), True)
