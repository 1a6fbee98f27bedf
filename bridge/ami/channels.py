"""What the AMI call tracker keeps per channel of a watched phone, and small field helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bridge.ami.messages import AmiEvent
from bridge.evidence import Observation
from bridge.model import ConsultState
from bridge.untrusted import ascii_digits

UNKNOWN_NUMBERS = frozenset({"", "<unknown>", "unknown"})


@dataclass(slots=True)
class AmiChannel:
    """One channel of a watched phone: a leg of its call, as the AMI tracker keeps it."""

    uniqueid: str
    channel: str
    phone: str
    role: str  # "customer" (every incoming call, call waiting too) or "consult"
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


def live_customer(legs: Iterable[AmiChannel], phone: str) -> AmiChannel | None:
    """The phone's live customer leg (its first live call), if it has one."""
    for leg in legs:
        if leg.phone == phone and leg.role == "customer" and not leg.ended:
            return leg
    return None


def event_time(stamp: str | None, received_at: float) -> float:
    """Asterisk's `Timestamp:` (seconds since the epoch, `timestampevents = yes`) when it is a
    sane time, else when the bridge received the event."""
    try:
        # float() also reads Unicode digits, "1_0" and "nan": ASCII digits and one dot only
        value = float(stamp) if stamp and ascii_digits(stamp.replace(".", "", 1)) else received_at
    except ValueError:
        return received_at
    return value if 0 <= value < 2**32 else received_at


def listing_age(row: AmiEvent) -> tuple[int, int, str]:
    """Sort key of a channel by age: Uniqueid is "<epoch seconds>.<sequence>", and
    "1795613972.10" is newer than "1795613972.9" (not a decimal fraction)."""
    uniqueid = row.get("Uniqueid") or ""
    epoch, _, seq = uniqueid.partition(".")
    # ASCII only: "².1" passes str.isdigit() and then int() raises (the resync was lost)
    if ascii_digits(epoch) and ascii_digits(seq) and len(epoch) <= 20 and len(seq) <= 20:
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
