"""What the AMI call tracker keeps per channel of a watched phone, and small field helpers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from bridge.ami.messages import AmiEvent
from bridge.evidence import Observation
from bridge.model import ConsultState, FailureCause

UNKNOWN_NUMBERS = frozenset({"", "<unknown>", "unknown"})


@dataclass(slots=True)
class AmiChannel:
    """One channel of a watched phone: a leg of its call, as the AMI tracker keeps it."""

    uniqueid: str
    channel: str
    phone: str
    role: str  # "customer", "consult" or "other" (a second incoming call: not ours)
    placed: bool  # the phone placed this call
    remote: str | None
    customer_leg: str | None = None  # for a consult leg: the customer leg's Uniqueid
    peer: str | None = None  # the other party's channel Uniqueid
    sip_call_id: str | None = None
    key: str | None = None  # the call id evidence is sent under, fixed at the first emission
    up: bool = False
    ended: bool = False
    consult: ConsultState = ConsultState.NONE  # customer leg: its consult's progress
    answered: bool = False  # consult leg: the consulted target answered it
    pending: list[tuple[Observation, str]] = field(default_factory=list)


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


@dataclass(slots=True)
class AmiCallTrackerStats:
    """Counters of one `AmiCallTracker` (the AMI link's own are `phone_drivers.ami.AmiStats`)."""

    events: int = 0
    tracked: int = 0  # events about a watched phone's channel
    evidence: int = 0
    legs: int = 0  # live legs now


def number(value: str | None) -> str | None:
    """A caller or connected-line number, or None when Asterisk does not know it."""
    if value is None or value.strip().lower() in UNKNOWN_NUMBERS:
        return None
    return value.strip()


def transfer_result(value: str | None) -> str:
    """A transfer event's `Result:` as a lower-case token (`not_permitted`)."""
    return (value or "unknown").strip().lower().replace(" ", "_")


# `DialEnd DialStatus` of a dial that did not reach the target.
DIAL_STATUS_CAUSES = {
    "BUSY": FailureCause.TARGET_BUSY,
    "NOANSWER": FailureCause.TARGET_NO_ANSWER,
    "CONGESTION": FailureCause.TARGET_UNAVAILABLE,
    "CHANUNAVAIL": FailureCause.TARGET_UNAVAILABLE,
    "CANCEL": FailureCause.CUSTOMER_HUNG_UP,  # the caller (the customer) went away
}
# Q.850 hangup causes (`Hangup Cause:`) that name the target's side; any other cause of a
# customer channel that hangs up before the target answered means the customer went away.
HANGUP_CAUSES = {
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


def dial_failure(status: str, target_cause: int | None) -> FailureCause:
    """Why a dial towards the target ended unanswered: its `DialStatus`, except that a target
    that declined (cause 21) is told apart from a busy or unreachable one."""
    if status != "CANCEL" and target_cause == 21:
        return FailureCause.TARGET_REJECTED
    return DIAL_STATUS_CAUSES.get(status, FailureCause.TRANSFER_FAILED)


def hangup_failure(cause: int | None) -> FailureCause:
    """Why a transfer failed whose customer (or target) channel hung up before the target
    answered, from the Q.850 cause: a target-side cause, else the customer went away."""
    return HANGUP_CAUSES.get(cause or 0, FailureCause.CUSTOMER_HUNG_UP)


def cause_code(value: str | None) -> int | None:
    """`Cause: 17` -> 17; None when absent or not a number."""
    text = (value or "").strip()
    return int(text) if text.isdigit() and len(text) < 4 else None


def event_time(stamp: str | None, received_at: float) -> float:
    """Asterisk's `Timestamp:` (seconds since the epoch, `timestampevents = yes`) when it is a
    sane time, else when the bridge received the event."""
    try:
        value = float(stamp) if stamp else received_at
    except ValueError:
        return received_at
    return value if 0 <= value < 2**32 else received_at


def listing_age(row: AmiEvent) -> tuple[int, int, str]:
    """Sort key of a channel by age: Uniqueid is "<epoch seconds>.<sequence>", and
    "1795613972.10" is newer than "1795613972.9" (not a decimal fraction)."""
    uniqueid = row.get("Uniqueid") or ""
    epoch, _, seq = uniqueid.partition(".")
    if epoch.isdigit() and seq.isdigit():
        return (int(epoch), int(seq), uniqueid)
    return (1 << 62, 0, uniqueid)


def chan_variables(event: AmiEvent, name: str | None) -> Iterator[tuple[str, str]]:
    """`(prefix, value)` of every `<Prefix>ChanVariable: NAME=value` of an event whose value is
    not empty (`Dest`, `Transferer`... name the other channels an event is about)."""
    if name is None:
        return
    wanted = name + "="
    for key, text in event.fields:
        if key.endswith("ChanVariable") and text.startswith(wanted):
            value = text[len(wanted) :].strip()
            if value:
                yield key[: -len("ChanVariable")], value


def variable(row: AmiEvent, name: str | None) -> str | None:
    """The event's own channel's `ChanVariable: NAME=value`, or None when absent or empty."""
    return next((value for prefix, value in chan_variables(row, name) if not prefix), None)
