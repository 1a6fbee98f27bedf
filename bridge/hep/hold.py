"""Hold and resume of a confirmed call leg, read from SDP offer/answer (RFC 3264, 6337).

A re-INVITE or UPDATE carries an offer; its 2xx carries the answer. The call is on hold when
the offer says ``sendonly``/``inactive`` (or ``c=0.0.0.0``), or when the answer is anything but
``sendrecv`` (the answerer holds). Only the 2xx decides: a refused re-INVITE changes nothing.
"""

from __future__ import annotations

from bridge.hep.legs import DialogChange, HoldChanged, Leg, LegState
from bridge.sip import SdpDirection, SipMessage

__all__ = ["on_offer", "on_offer_answer"]


def on_offer(leg: Leg, msg: SipMessage, method: str) -> None:
    """Remember a re-INVITE/UPDATE offer (its direction; None without SDP) until its answer."""
    if leg.state is LegState.CONFIRMED:
        leg.offer = msg.sdp_direction()
        leg.offer_cseq = msg.cseq.number
        leg.offer_method = method


def on_offer_answer(leg: Leg, msg: SipMessage, code: int, out: list[DialogChange]) -> None:
    """The answer to the pending offer: report a change of hold state."""
    if code < 200:
        return
    offer = leg.offer
    leg.offer = leg.offer_cseq = leg.offer_method = None
    if code >= 300 or leg.state is not LegState.CONFIRMED:
        return
    answer = msg.sdp_direction()
    if offer is not None:
        held = offer.is_hold or (answer is not None and answer is not SdpDirection.SENDRECV)
    elif answer is not None:
        held = answer is not SdpDirection.SENDRECV  # a late offer, or the re-INVITE not captured
    else:
        return
    if held is not leg.held:
        leg.held = held
        out.append(HoldChanged(leg, held))
