"""Sessions to and from JSON: the API view (with `actions`) and the stored record."""

from __future__ import annotations

from typing import Any

from bridge.model import (
    Binding,
    Call,
    CallCandidate,
    CallState,
    ConfirmedBy,
    Conflict,
    ConsultState,
    Customer,
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
from bridge.session.machine import available_actions, open_refusal

IN_PROGRESS = frozenset({TransferState.OFFERED, TransferState.DIALING, TransferState.CONFIRMING})


def _conflict_json(conflict: Conflict | None) -> dict[str, Any] | None:
    if conflict is None:
        return None
    return {
        "desktop": conflict.desktop,
        "phone": conflict.phone,
        "at": conflict.at,
        "detail": conflict.detail,
    }


def session_view(session: Session, transfer_enabled: bool) -> dict[str, Any]:
    """The session as docs/api.md shows it to the desktop."""
    data = session_record(session)
    transfer = data["transfer"]
    del transfer["agent_said"]
    del transfer["phone"]["decided_at"]  # the bridge's bookkeeping, not the phone's word
    refusal = None
    if session.transfer.state not in IN_PROGRESS:
        refusal = open_refusal(session, transfer_enabled)
    transfer["unavailable"] = (
        None if refusal is None else {"code": refusal.code, "message": refusal.message}
    )
    data["actions"] = available_actions(session, transfer_enabled)
    del data["updated_at"]
    return data


def session_record(session: Session) -> dict[str, Any]:
    """Everything about a session as plain JSON, for the store."""
    t = session.transfer
    customer: dict[str, Any] = {"number": session.customer.number}
    if session.customer.name is not None:
        customer["name"] = session.customer.name
    return {
        "id": session.id,
        "account_id": session.account_id,
        "agent_id": session.agent_id,
        "version": session.version,
        "status": session.status.value,
        "customer": customer,
        "call": {
            "state": session.call.state.value,
            "sip_call_id": session.call.sip_call_id,
            "since": session.call.since,
            "binding": session.call.binding.value,
            "candidates": [c.to_json() for c in session.call.candidates],
        },
        "transfer": {
            "state": t.state.value,
            "kind": t.kind.value if t.kind else None,
            "target": t.target,
            "confirmed_by": t.confirmed_by.value if t.confirmed_by else None,
            "phone": {
                "consult": t.phone.consult.value,
                "refer": t.phone.refer.value,
                "last_sipfrag": t.phone.last_sipfrag,
                "proved_by": t.phone.proved_by,
                "final_at": t.phone.final_at,
                "proof": t.phone.proof.value,
                "proof_reason": t.phone.proof_reason,
                "failure": t.phone.failure.value if t.phone.failure else None,
                "handoff_at": t.phone.handoff_at,
                "pbx_reported_at": t.phone.pbx_reported_at,
                "decided_at": t.phone.decided_at,
            },
            "conflict": _conflict_json(t.conflict),
            "acknowledged": t.acknowledged,
            "agent_said": t.agent_said,
        },
        "result": session.result,
        "created_at": session.created_at,
        "ended_at": session.ended_at,
        "updated_at": session.updated_at,
    }


def _phone_from_record(p: dict[str, Any]) -> PhoneProgress:
    """Records written before proof grades existed load with `proof: none`."""
    failure = p.get("failure")
    return PhoneProgress(
        consult=ConsultState(p["consult"]),
        refer=ReferState(p["refer"]),
        last_sipfrag=p.get("last_sipfrag"),
        proved_by=p.get("proved_by"),
        final_at=p.get("final_at"),
        proof=ProofGrade(p.get("proof", "none")),
        proof_reason=p.get("proof_reason"),
        failure=FailureCause(failure) if failure else None,
        handoff_at=p.get("handoff_at"),
        pbx_reported_at=p.get("pbx_reported_at"),
        decided_at=p.get("decided_at"),
    )


def session_from_record(data: dict[str, Any]) -> Session:
    """Inverse of `session_record`."""
    t = data["transfer"]
    c = data["call"]
    conflict = t.get("conflict")
    return Session(
        account_id=data["account_id"],
        id=data["id"],
        agent_id=data["agent_id"],
        customer=Customer(data["customer"]["number"], data["customer"].get("name")),
        created_at=data["created_at"],
        version=data["version"],
        status=SessionStatus(data["status"]),
        call=Call(
            state=CallState(c["state"]),
            sip_call_id=c.get("sip_call_id"),
            since=c.get("since"),
            binding=Binding(c.get("binding", "none")),
            candidates=tuple(
                CallCandidate(x["sip_call_id"], CallState(x["state"]), x["source"])
                for x in c.get("candidates", ())
            ),
        ),
        transfer=Transfer(
            state=TransferState(t["state"]),
            kind=TransferKind(t["kind"]) if t.get("kind") else None,
            target=t.get("target"),
            confirmed_by=ConfirmedBy(t["confirmed_by"]) if t.get("confirmed_by") else None,
            phone=_phone_from_record(t["phone"]),
            conflict=Conflict(**conflict) if conflict else None,
            acknowledged=t.get("acknowledged", False),
            agent_said=t.get("agent_said"),
        ),
        result=data.get("result"),
        ended_at=data.get("ended_at"),
        updated_at=data.get("updated_at"),
    )
