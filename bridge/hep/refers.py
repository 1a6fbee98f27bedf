"""REFER and its implicit subscription (RFC 3515, 4488) inside a watched phone's call leg.

The phone's REFER opens a :class:`~bridge.hep.legs.ReferSubscription` keyed by its CSeq number
(the ``id`` NOTIFYs carry); its answer and the NOTIFY sipfrags move it on. States only move
forward, so a NOTIFY captured before the 202 leaves the 202 with nothing to report, and a NOTIFY
captured before its REFER opens a placeholder that the REFER fills in.
"""

from __future__ import annotations

from bridge.hep.legs import (
    DialogChange,
    Leg,
    LegRole,
    LegState,
    ReferAnswered,
    ReferNotified,
    ReferSent,
    ReferSubscription,
)
from bridge.model import ReferState, TransferKind
from bridge.sip import SipMessage, SipParseError

__all__ = ["MAX_REFERS", "on_notify", "on_refer", "on_refer_answer"]

MAX_REFERS = 16  # REFERs remembered per dialog (a phone sends one or two)


def _keep(refers: dict[str, ReferSubscription], refer: ReferSubscription) -> int:
    """Add ``refer`` under its id; past :data:`MAX_REFERS` the oldest goes. Returns evictions."""
    refers[refer.id] = refer
    if len(refers) <= MAX_REFERS:
        return 0
    del refers[next(iter(refers))]
    return 1


def on_refer(leg: Leg, msg: SipMessage, out: list[DialogChange]) -> int:
    """The phone sent a REFER in ``leg``; returns how many older REFERs were evicted."""
    refer_to = msg.refer_to()
    if refer_to is None:
        return 0
    try:
        refer_sub = msg.refer_sub()
    except SipParseError:
        refer_sub = None
    refer_id = str(msg.cseq.number)
    refers = leg.refers
    if refers is None:
        refers = leg.refers = {}
    refer = refers.get(refer_id)
    if refer is None:
        refer = refers.pop("", None) or ReferSubscription(refer_id)
    elif refer.kind is not None:
        return 0
    refer.id = refer_id
    refer.kind = _kind(leg, refer_to.replaces is not None)
    refer.consult_confirmed = refer.kind is TransferKind.ATTENDED and _consult_of(leg) is not None
    # Some phones write an attended Refer-To without a user (Yealink T4x: the PBX's address
    # and ?Replaces=...): the target is then the consult's far end.
    consult = _consult_of(leg) if refer_to.replaces is not None else None
    refer.target = refer_to.uri.user or (consult.remote if consult is not None else None)
    refer.replaces = refer_to.replaces
    refer.subscribed = refer_sub is not False
    evicted = _keep(refers, refer)
    if not refer.final:
        out.append(ReferSent(leg, refer))
    return evicted


def _consult_of(leg: Leg) -> Leg | None:
    """The consult a REFER with Replaces in ``leg`` is about, if it was answered."""
    consult = leg if leg.role is LegRole.CONSULT else leg.consult
    if consult is None or consult.state is not LegState.CONFIRMED:
        return None
    return consult


def _kind(leg: Leg, replaces: bool) -> TransferKind:
    """Blind; attended when the consult was answered; semi-attended when it still rang.

    A consult that was never seen (the capture began later) counts as attended: the REFER says
    so, but its 2xx NOTIFY is then not proof either (``consult_confirmed`` stays False).
    """
    if not replaces:
        return TransferKind.BLIND
    consult = leg if leg.role is LegRole.CONSULT else leg.consult
    if consult is not None and consult.state in (LegState.TRYING, LegState.EARLY):
        return TransferKind.SEMI_ATTENDED
    return TransferKind.ATTENDED


def on_refer_answer(leg: Leg, msg: SipMessage, code: int, out: list[DialogChange]) -> None:
    """A final answer to one of the phone's REFERs in ``leg``."""
    refers = leg.refers
    if not refers or code < 200:
        return
    refer_id = str(msg.cseq.number)
    refer = refers.get(refer_id)
    if refer is None or refer.kind is None:
        return
    line = f"SIP/2.0 {code} {msg.reason or ''}".rstrip()
    if code < 300:
        if refer.state is ReferState.REQUESTED:
            refer.state = ReferState.ACCEPTED
            out.append(ReferAnswered(leg, refer, code, line))
    elif code in (401, 407):
        del refers[refer_id]  # the phone sends it again with credentials
    elif not refer.final:
        refer.state = ReferState.FAILED
        refer.active = False
        refer.sipfrag = line
        out.append(ReferAnswered(leg, refer, code, line))


def on_notify(leg: Leg, msg: SipMessage, out: list[DialogChange]) -> int:
    """A NOTIFY to the phone in ``leg``; only ``Event: refer`` with a sipfrag matters. Returns
    how many older REFERs were evicted to make room for one the NOTIFY names."""
    event = msg.event()
    if event is None or event.package != "refer":
        return 0
    frag = msg.sipfrag()
    sub_state = msg.header("subscription-state") or ""
    refer, evicted = _refer_for(leg, event.id)
    if sub_state.lstrip()[:10].lower() == "terminated":
        refer.active = False
    if frag is None or refer.final:
        return evicted
    code = frag.status_code
    if code < 200:
        state = ReferState.TRYING
    elif code < 300:
        state = ReferState.SUCCEEDED
    else:
        state = ReferState.FAILED
    if state is refer.state:
        return evicted
    line = f"SIP/2.0 {code} {frag.reason}".rstrip()
    refer.state = state
    refer.sipfrag = line
    if state is not ReferState.TRYING:
        refer.active = False
    out.append(ReferNotified(leg, refer, code, line))
    return evicted


def _refer_for(leg: Leg, refer_id: str | None) -> tuple[ReferSubscription, int]:
    """The REFER a NOTIFY reports on: by ``id``, else the latest open one, else a placeholder."""
    refers = leg.refers
    if refers is None:
        refers = leg.refers = {}
    if refer_id is not None and refer_id in refers:
        return refers[refer_id], 0
    for refer in reversed(refers.values()):
        if not refer.final or refer_id is None:
            return refer, 0
    placeholder = ReferSubscription(refer_id or "")
    return placeholder, _keep(refers, placeholder)
