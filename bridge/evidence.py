"""Phone evidence: what the sources (HEP, AMI, desk phones, dialog-info) tell the state machine.

Sources normalise what they see into these values; the session state machine accepts them in any
order relative to the desktop's clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.model import CallState, ConsultState, ReferState, TransferKind


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
class TransferSucceeded:
    """Proof that the customer is connected to the target (2xx sipfrag, replaced dialog...)."""

    reason: str
    sipfrag: str | None = None


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """Proof that the customer did not reach the target (3xx-6xx sipfrag, rejected REFER...)."""

    reason: str
    sipfrag: str | None = None


Observation = (
    CallStateChanged
    | ConsultChanged
    | TransferRequested
    | TransferProgressed
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
    with the customer, `remote` the customer's number as the phone sees it.
    """

    phone: str
    evidence: PhoneEvidence
    call_id: str | None = None
    remote: str | None = None


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
        case TransferSucceeded(reason=reason, sipfrag=sipfrag):
            return {"type": "transfer_succeeded", "reason": reason, "sipfrag": sipfrag}
        case TransferFailed(reason=reason, sipfrag=sipfrag):
            return {"type": "transfer_failed", "reason": reason, "sipfrag": sipfrag}
    raise AssertionError(f"unknown observation {observation!r}")  # pragma: no cover
