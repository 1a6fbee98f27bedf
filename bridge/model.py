"""Domain values: accounts, agents, sessions and their transfer, as frozen dataclasses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SessionStatus(StrEnum):
    """Where a customer session is in its life."""

    ACTIVE = "active"
    CALL_TRANSFERRED = "call_transferred"
    ENDED = "ended"


class CallState(StrEnum):
    """The state of the session's phone call with the customer."""

    NONE = "none"
    RINGING = "ringing"
    CONNECTED = "connected"
    ON_HOLD = "on_hold"
    ENDED = "ended"


class Binding(StrEnum):
    """How the session is tied to a real phone call."""

    NONE = "none"
    AMBIGUOUS = "ambiguous"
    CALL_ID = "call_id"
    PHONE_AND_NUMBER = "phone_and_number"


class TransferState(StrEnum):
    """The transfer as the desktop flow sees it (docs/api.md)."""

    NONE = "none"
    OFFERED = "offered"
    DIALING = "dialing"
    CONFIRMING = "confirming"
    TRANSFERRED = "transferred"
    FAILED = "failed"


class TransferKind(StrEnum):
    """Blind (REFER to a number), attended (consult answered first, REFER with Replaces) or
    semi-attended (REFER with Replaces while the consult still rings: nobody has answered)."""

    BLIND = "blind"
    ATTENDED = "attended"
    SEMI_ATTENDED = "semi_attended"


class ProofGrade(StrEnum):
    """How strong the phone side's word that the customer reached the target is.

    Only the two target-side grades prove a transfer. A PBX's own report (a NOTIFY sipfrag 200,
    AMI `BlindTransfer`/`AttendedTransfer` Success) comes before anyone answers in ordinary
    set-ups (early media, `refer_blind_progress=no`, a semi-attended consult), so it only
    informs the agent, whose Yes/No then decides.
    """

    NONE = "none"
    PBX_REPORTED = "pbx_reported"
    TARGET_ANSWERED = "target_answered"
    CONSULT_REPLACED = "consult_replaced"


PROVING_GRADES = frozenset({ProofGrade.TARGET_ANSWERED, ProofGrade.CONSULT_REPLACED})


class FailureCause(StrEnum):
    """Why the phone side says a transfer attempt failed."""

    TARGET_BUSY = "target_busy"
    TARGET_REJECTED = "target_rejected"
    TARGET_NO_ANSWER = "target_no_answer"
    TARGET_UNAVAILABLE = "target_unavailable"
    CUSTOMER_HUNG_UP = "customer_hung_up"
    REFER_REJECTED = "refer_rejected"
    TRANSFER_FAILED = "transfer_failed"


# Q.850 causes (a SIP `Reason: Q.850;cause=N`, AMI `Hangup Cause:`) that name the target's side;
# a customer dropped with any other cause went away on their own (or for no stated reason).
Q850_CAUSES = {
    17: FailureCause.TARGET_BUSY,  # user busy (also Busy() / Hangup(17) in a dialplan)
    21: FailureCause.TARGET_REJECTED,  # call rejected (603 Decline)
    18: FailureCause.TARGET_NO_ANSWER,  # no user responding
    19: FailureCause.TARGET_NO_ANSWER,  # no answer
    1: FailureCause.TARGET_UNAVAILABLE,  # unallocated number
    3: FailureCause.TARGET_UNAVAILABLE,  # no route to destination
    27: FailureCause.TARGET_UNAVAILABLE,  # destination out of order
    34: FailureCause.TARGET_UNAVAILABLE,  # no circuit available
    38: FailureCause.TARGET_UNAVAILABLE,  # network out of order
}


def failure_cause_of_q850(cause: int | None) -> FailureCause:
    """Why a transfer failed whose customer was dropped before the target answered."""
    return Q850_CAUSES.get(cause or 0, FailureCause.CUSTOMER_HUNG_UP)


def failure_cause_of_status(code: int) -> FailureCause:
    """The cause a SIP final status (of the target's leg or a sipfrag) names."""
    if code in (486, 600):
        return FailureCause.TARGET_BUSY
    if code in (603, 403, 607, 608):
        return FailureCause.TARGET_REJECTED
    if code in (408, 480, 487):
        return FailureCause.TARGET_NO_ANSWER
    if code in (404, 410, 484, 485, 502, 503, 504, 604):
        return FailureCause.TARGET_UNAVAILABLE
    return FailureCause.TRANSFER_FAILED


class ConfirmedBy(StrEnum):
    """Who proved the transfer."""

    PHONE = "phone"
    AGENT = "agent"
    PHONE_AND_AGENT = "phone_and_agent"


class ConsultState(StrEnum):
    """The agent's consult call to the other agent, as the phone reports it."""

    NONE = "none"
    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class ReferState(StrEnum):
    """The phone's transfer request (REFER or the PBX's own transfer) and its progress."""

    NONE = "none"
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    TRYING = "trying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Action(StrEnum):
    """Desktop steps of the seed's transfer flow (POST /v1/sessions/{id}/transfer)."""

    OPEN = "open"
    DISMISS = "dismiss"
    INTERNAL = "internal"
    NEXT = "next"
    CONFIRM = "confirm"
    DENY = "deny"
    ACKNOWLEDGE = "acknowledge"


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant; `transfer_enabled` is the seed's account-level feature switch (rule 2)."""

    id: str
    name: str
    transfer_enabled: bool
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """The API representation."""
        return {
            "id": self.id,
            "name": self.name,
            "transfer_enabled": self.transfer_enabled,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class Device:
    """A desk phone that posts its own events."""

    vendor: str
    mac: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class Phone:
    """How the sources recognise an agent's phone."""

    sip_uri: str
    ami_endpoint: str | None = None
    device: Device | None = None

    def to_json(self) -> dict[str, Any]:
        """The API representation (optional parts only when set)."""
        out: dict[str, Any] = {"sip_uri": self.sip_uri}
        if self.ami_endpoint is not None:
            out["ami_endpoint"] = self.ami_endpoint
        if self.device is not None:
            dev: dict[str, Any] = {"vendor": self.device.vendor}
            if self.device.mac is not None:
                dev["mac"] = self.device.mac
            if self.device.ip is not None:
                dev["ip"] = self.device.ip
            out["device"] = dev
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Phone:
        """Inverse of `to_json` for trusted (stored or validated) data."""
        dev = data.get("device")
        return cls(
            sip_uri=data["sip_uri"],
            ami_endpoint=data.get("ami_endpoint"),
            device=Device(dev["vendor"], dev.get("mac"), dev.get("ip")) if dev else None,
        )


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent of an account and the phone they use."""

    account_id: str
    id: str
    name: str
    phone: Phone
    updated_at: str


@dataclass(frozen=True, slots=True)
class CallCandidate:
    """A live call an `ambiguous` session could be bound to, as a source names it."""

    sip_call_id: str
    state: CallState
    source: str

    def to_json(self) -> dict[str, Any]:
        """The API representation."""
        return {"sip_call_id": self.sip_call_id, "state": self.state.value, "source": self.source}


@dataclass(frozen=True, slots=True)
class Call:
    """The session's phone call with the customer; `candidates` while `ambiguous`."""

    state: CallState = CallState.NONE
    sip_call_id: str | None = None
    since: str | None = None
    binding: Binding = Binding.NONE
    candidates: tuple[CallCandidate, ...] = ()


@dataclass(frozen=True, slots=True)
class PhoneProgress:
    """What the phone has reported about the consult call and the transfer request."""

    consult: ConsultState = ConsultState.NONE
    refer: ReferState = ReferState.NONE
    last_sipfrag: str | None = None
    proved_by: str | None = None  # the source whose evidence gave the final outcome
    final_at: str | None = None  # when that source saw it (RFC 3339)
    proof: ProofGrade = ProofGrade.NONE  # the strongest word on success so far
    proof_reason: str | None = None  # the evidence behind `proof`
    failure: FailureCause | None = None  # why the phone side says the attempt failed
    handoff_at: str | None = None  # when the target answered with the customer (source time)
    pbx_reported_at: str | None = None  # when the PBX reported success (source time)
    # The bridge's own time of the final outcome: same-attempt decisions across sources use
    # it, never a source's clock (a capture host may be skewed or a capture replayed).
    decided_at: str | None = None


@dataclass(frozen=True, slots=True)
class Conflict:
    """The desktop and the phone disagree; the phone wins, both sides are kept."""

    desktop: str
    phone: str
    at: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """The session's one transfer (rule 6) as the desktop flow and the phone see it."""

    state: TransferState = TransferState.NONE
    kind: TransferKind | None = None
    target: str | None = None
    confirmed_by: ConfirmedBy | None = None
    phone: PhoneProgress = field(default_factory=PhoneProgress)
    conflict: Conflict | None = None
    acknowledged: bool = False
    # Set when the agent answered "Yes"/"No" in the current attempt, so that later phone
    # evidence can be checked against it.
    agent_said: str | None = None


@dataclass(frozen=True, slots=True)
class Customer:
    """The customer the session is about."""

    number: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A customer session of the Agent Desktop."""

    account_id: str
    id: str
    agent_id: str
    customer: Customer
    created_at: str
    version: int = 1
    status: SessionStatus = SessionStatus.ACTIVE
    call: Call = field(default_factory=Call)
    transfer: Transfer = field(default_factory=Transfer)
    result: str | None = None
    ended_at: str | None = None
    updated_at: str | None = None
