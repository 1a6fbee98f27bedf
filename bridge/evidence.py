"""Phone evidence: what the sources (HEP, AMI, desk phones, dialog-info) tell the state machine.

Sources normalise what they see into these values; the session state machine accepts them in any
order relative to the desktop's clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.model import (
    PROVING_GRADES,
    CallState,
    ConsultState,
    FailureCause,
    ProofGrade,
    ReferState,
    TransferKind,
)


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    """The phone's call with the customer changed state."""

    state: CallState


@dataclass(frozen=True, slots=True)
class ConsultChanged:
    """The agent's consult call to the other agent moved on."""

    state: ConsultState
    target: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRequested:
    """The phone asked for a transfer (a REFER, or the PBX's own transfer feature)."""

    kind: TransferKind
    target: str | None = None


@dataclass(frozen=True, slots=True)
class TransferProgressed:
    """The transfer request was accepted or is being tried; not proof of anything yet."""

    refer: ReferState
    sipfrag: str | None = None


@dataclass(frozen=True, slots=True)
class TransferReported:
    """The PBX (or transferee) reported success: a 2xx sipfrag for a blind or semi-attended
    REFER, AMI `BlindTransfer`/early `AttendedTransfer` Success. Not proof: Asterisk sends it
    before anyone answers (early media, `refer_blind_progress=no`, a ringing consult)."""

    reason: str
    sipfrag: str | None = None


@dataclass(frozen=True, slots=True)
class TransferSucceeded:
    """Proof from the target's side that a person there has the customer: the target's leg
    answered carrying the customer, or an answered consult replaced (`proof` says which)."""

    reason: str
    sipfrag: str | None = None
    proof: ProofGrade = ProofGrade.TARGET_ANSWERED

    def __post_init__(self) -> None:
        if self.proof not in PROVING_GRADES:
            raise ValueError(f"{self.proof} is not proof; report it as TransferReported")


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The customer did not reach the target (target busy/rejected/unanswered, 3xx-6xx sipfrag,
    rejected REFER, customer gone); `cause` names why."""

    reason: str
    sipfrag: str | None = None
    cause: FailureCause = FailureCause.TRANSFER_FAILED


Observation = (
    CallStateChanged
    | ConsultChanged
    | TransferRequested
    | TransferProgressed
    | TransferReported
    | TransferSucceeded
    | TransferFailed
)


@dataclass(frozen=True, slots=True)
class PhoneEvidence:
    """One observation from one source, at the time the source saw it (RFC 3339)."""

    source: str
    at: str
    observation: Observation


@dataclass(frozen=True, slots=True)
class PhoneEvent:
    """Evidence about a call of an agent's phone, before it is tied to a session.

    `phone` is the phone's SIP URI (or its key), `call_id` the SIP Call-ID of the agent's leg
    with the customer, `remote` the customer's number as the phone sees it. `account_id` is the
    account that owns the source which saw it (None: a source not tied to one account); the
    evidence reaches that account's agents only.
    """

    phone: str
    evidence: PhoneEvidence
    call_id: str | None = None
    remote: str | None = None
    account_id: str | None = None


def describe(observation: Observation) -> dict[str, str | None]:
    """A flat, JSON-ready description of an observation for the audit trail."""
    match observation:
        case CallStateChanged(state=state):
            return {"type": "call_state", "state": state.value}
        case ConsultChanged(state=state, target=target):
            return {"type": "consult", "state": state.value, "target": target}
        case TransferRequested(kind=kind, target=target):
            return {"type": "transfer_requested", "kind": kind.value, "target": target}
        case TransferProgressed(refer=refer, sipfrag=sipfrag):
            return {"type": "transfer_progress", "refer": refer.value, "sipfrag": sipfrag}
        case TransferReported(reason=reason, sipfrag=sipfrag):
            return {"type": "transfer_reported", "reason": reason, "sipfrag": sipfrag}
        case TransferSucceeded(reason=reason, sipfrag=sipfrag, proof=proof):
            return {
                "type": "transfer_succeeded",
                "reason": reason,
                "sipfrag": sipfrag,
                "proof": proof.value,
            }
        case TransferFailed(reason=reason, sipfrag=sipfrag, cause=cause):
            return {
                "type": "transfer_failed",
                "reason": reason,
                "sipfrag": sipfrag,
                "cause": cause.value,
            }
    raise AssertionError(f"unknown observation {observation!r}")  # pragma: no cover
