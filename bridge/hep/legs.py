"""The values the dialog tracker keeps and reports: call legs, REFER subscriptions, changes.

A :class:`Leg` is one watched phone's view of one INVITE dialog (a Call-ID seen from that
phone's side). Legs and subscriptions are mutable tracker state; the changes reported to the
transfer detector are small immutable tuples that point at them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from bridge.hep.sides import Hop
from bridge.model import ReferState, TransferKind
from bridge.sip import ReplacesParams, SdpDirection

__all__ = [
    "FOREIGN_ROLES",
    "LEG_STEPS",
    "TARGET_ROLES",
    "DialogChange",
    "DialogReplaced",
    "HoldChanged",
    "Leg",
    "LegAnswered",
    "LegEnded",
    "LegEvent",
    "LegRinging",
    "LegRole",
    "LegStarted",
    "LegState",
    "ReferAnswered",
    "ReferNotified",
    "ReferSent",
    "ReferSubscription",
]

FINAL_REFER = frozenset({ReferState.SUCCEEDED, ReferState.FAILED})


class LegState(StrEnum):
    """RFC 3261 dialog states, plus TRYING for an INVITE with no dialog-creating answer yet."""

    TRYING = "trying"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class LegRole(StrEnum):
    """A phone's ordinary call, its consult call to the target of an attended transfer, or a
    leg toward the transfer target that the phone is not on (seen only when the capture point
    sees the PBX's or the transferee's side, which a PBX-side capture does):

    - TARGET: the new INVITE toward the target carrying the customer after a blind REFER
      (caller = the customer's number); its answer is the proof that a person has the customer;
    - CONSULT_TARGET: the PBX's leg toward the target of the phone's consult call (caller = the
      agent); after a semi-attended REFER its answer is that proof.
    - CUSTOMER_SIDE: the customer's own dialog with the PBX (a back-to-back PBX's other leg);
      the PBX ending it before the target answered means the customer was dropped.
    """

    CALL = "call"
    CONSULT = "consult"
    TARGET = "target"
    CONSULT_TARGET = "consult_target"
    CUSTOMER_SIDE = "customer_side"


TARGET_ROLES = frozenset({LegRole.TARGET, LegRole.CONSULT_TARGET})
# Legs the phone is not on: they never carry its REFERs, NOTIFYs or hold.
FOREIGN_ROLES = frozenset({LegRole.TARGET, LegRole.CONSULT_TARGET, LegRole.CUSTOMER_SIDE})


class LegEvent(StrEnum):
    """What moves a leg's dialog state (RFC 3261 section 12 and 13)."""

    PROVISIONAL = "provisional"  # a 1xx with a To tag: an early dialog
    ANSWERED = "answered"  # a 2xx to the INVITE
    ADOPTED = "adopted"  # an in-dialog request from a dialog begun before we watched
    ENDED = "ended"  # BYE, CANCEL, a final error


# The one table of a leg's dialog states: (state, event) -> next state. A pair not listed is
# not a move (a 180 after the 200 changes nothing); `DialogTracker._goto` applies it.
LEG_STEPS: dict[tuple[LegState, LegEvent], LegState] = {
    (LegState.TRYING, LegEvent.PROVISIONAL): LegState.EARLY,
    (LegState.TRYING, LegEvent.ANSWERED): LegState.CONFIRMED,
    (LegState.EARLY, LegEvent.ANSWERED): LegState.CONFIRMED,
    (LegState.TRYING, LegEvent.ADOPTED): LegState.CONFIRMED,
    (LegState.TRYING, LegEvent.ENDED): LegState.TERMINATED,
    (LegState.EARLY, LegEvent.ENDED): LegState.TERMINATED,
    (LegState.CONFIRMED, LegEvent.ENDED): LegState.TERMINATED,
}


class ReferSubscription:
    """One REFER sent by a watched phone and its implicit ``refer`` subscription (RFC 3515)."""

    __slots__ = (
        "active",
        "consult_confirmed",
        "id",
        "kind",
        "replaces",
        "sipfrag",
        "state",
        "subscribed",
        "target",
    )

    def __init__(self, refer_id: str) -> None:
        self.id = refer_id  # the REFER's CSeq number, which NOTIFYs name in ``Event: refer;id=``
        # None while only NOTIFYs have been seen (captured before their REFER).
        self.kind: TransferKind | None = None
        self.target: str | None = None
        self.replaces: ReplacesParams | None = None
        self.subscribed = True  # False with ``Refer-Sub: false`` (RFC 4488): no NOTIFY will come
        self.active = True  # until a final sipfrag or ``Subscription-State: terminated``
        self.state = ReferState.REQUESTED
        self.sipfrag: str | None = None
        # For a REFER with Replaces: the consult it names was answered when the REFER was sent.
        # Only then is the PBX's 2xx NOTIFY proof (otherwise it is semi-attended).
        self.consult_confirmed = False

    @property
    def final(self) -> bool:
        """True once the transfer attempt has an outcome."""
        return self.state in FINAL_REFER

    def __repr__(self) -> str:
        return f"<ReferSubscription id={self.id} {self.kind} to={self.target} {self.state}>"


class Leg:
    """A watched phone's view of one INVITE dialog."""

    __slots__ = (
        "call_id",
        "consult",
        "customer",
        "ended_at",
        "held",
        "invite_cseq",
        "last_at",
        "offer",
        "offer_cseq",
        "offer_method",
        "outgoing",
        "phone",
        "phone_tag",
        "refers",
        "remote",
        "remote_tag",
        "removed",
        "replaced",
        "role",
        "sent_to",
        "started_at",
        "state",
        "targets",
        "verified",
    )

    def __init__(self, call_id: str, phone: str, outgoing: bool, at: float) -> None:
        self.call_id = call_id
        self.phone = phone  # the watched phone's URI as configured
        self.outgoing = outgoing  # the phone sent the dialog-creating INVITE
        self.phone_tag: str | None = None
        self.remote_tag: str | None = None
        self.remote: str | None = None  # the other party's number (user part or P-A-I)
        self.state = LegState.TRYING
        # An incoming leg counts once the phone itself answers (see bridge.hep.sides).
        self.verified = outgoing
        # Where the dialog's INVITE went (HEP destination, Request-URI host:port).
        self.sent_to: tuple[Hop, ...] = ()
        self.held = False
        self.role = LegRole.CALL
        self.customer: Leg | None = None  # for a consult: the held call it consults about
        self.consult: Leg | None = None  # for a call: its latest consult
        self.targets: list[Leg] | None = None  # for a call: legs toward its transfer's target
        self.refers: dict[str, ReferSubscription] | None = None
        self.invite_cseq: int | None = None
        self.offer_cseq: int | None = None  # a pending re-INVITE/UPDATE offer
        self.offer_method: str | None = None
        self.offer: SdpDirection | None = None
        # Times on the bridge's own clock (receive time), never a capture host's.
        self.started_at = at
        self.last_at = at
        self.ended_at: float | None = None
        self.replaced = False
        self.removed = False

    def __repr__(self) -> str:
        return f"<Leg {self.phone} {self.call_id} {self.role} {self.state} remote={self.remote}>"

    @property
    def customer_leg(self) -> Leg:
        """The call this leg's transfer evidence is about: the consulted call, or itself."""
        return self.customer if self.customer is not None else self

    def all_refers(self) -> list[ReferSubscription]:
        """REFERs about this call: its own and its consult's (some phones REFER in the consult)."""
        refers = list(self.refers.values()) if self.refers else []
        consult = self.consult
        if consult is not None and consult.refers:
            refers.extend(consult.refers.values())
        return refers

    def awaiting_notify(self) -> bool:
        """True while a REFER of this leg may still get NOTIFYs."""
        refers = self.refers
        if not refers:
            return False
        return any(r.active and r.subscribed and not r.final for r in refers.values())


class LegStarted(NamedTuple):
    """The phone sent an INVITE (outgoing), or answered one with 1xx/2xx (incoming)."""

    leg: Leg


class LegRinging(NamedTuple):
    """The first 18x of the leg's INVITE."""

    leg: Leg
    code: int


class LegAnswered(NamedTuple):
    """A 2xx to the leg's INVITE: the dialog is confirmed."""

    leg: Leg


class HoldChanged(NamedTuple):
    """A re-INVITE/UPDATE offer and its answer put the call on hold or took it off."""

    leg: Leg
    held: bool


class LegEnded(NamedTuple):
    """BYE, CANCEL or a final error ended the leg; ``prior`` is the state it ended from."""

    leg: Leg
    prior: LegState
    by_phone: bool
    cause: str  # "bye", "cancel", "cancelled" (487), "rejected"
    code: int | None = None
    status: str | None = None  # the final response's status line, when one ended it
    q850: int | None = None  # a BYE's `Reason: Q.850;cause=N`, when it gave one


class ReferSent(NamedTuple):
    """The phone sent a REFER in this leg."""

    leg: Leg
    refer: ReferSubscription


class ReferAnswered(NamedTuple):
    """The REFER was accepted (2xx) or rejected (3xx-6xx)."""

    leg: Leg
    refer: ReferSubscription
    code: int
    status_line: str


class ReferNotified(NamedTuple):
    """A NOTIFY moved the REFER on (1xx trying, 2xx success, 3xx-6xx failure)."""

    leg: Leg
    refer: ReferSubscription
    code: int
    sipfrag: str


class DialogReplaced(NamedTuple):
    """An INVITE with Replaces naming this leg's dialog was answered 2xx (RFC 3891)."""

    leg: Leg


DialogChange = (
    LegStarted
    | LegRinging
    | LegAnswered
    | HoldChanged
    | LegEnded
    | ReferSent
    | ReferAnswered
    | ReferNotified
    | DialogReplaced
)
