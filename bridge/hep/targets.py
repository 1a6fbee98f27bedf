"""Legs toward a transfer's target that the agent's phone is not on; no I/O.

The proof that a person at the target has the customer is on such a leg, so the dialog tracker
watches, for a while, for new INVITEs that belong to a transfer: after a blind REFER, those
whose caller is the customer (the PBX's or the transferee's leg toward the target); after the
phone starts a consult, those whose caller is the agent and which are not the phone's own (the
PBX's leg toward the consult target, which decides a semi-attended transfer).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from bridge.hep.legs import Leg, LegRole
from bridge.sip import SipMessage
from bridge.uris import numbers_match, uri_of_header, user_of_uri

__all__ = ["MAX_WATCHES", "TargetWatch", "TargetWatches", "caller"]

MAX_WATCHES = 4096  # open watches; the oldest is dropped (and counted) past this


class TargetWatch(NamedTuple):
    """Which new INVITEs are legs toward a transfer's target: caller ``number``, not the
    transferring ``phone``'s own legs, until ``until`` (receive time)."""

    number: str
    call: Leg
    phone: str
    role: LegRole
    until: float


class TargetWatches:
    """The open watches, oldest first, bounded by :data:`MAX_WATCHES`."""

    def __init__(self) -> None:
        self._watches: deque[TargetWatch] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._watches)

    def watch(self, number: str | None, call: Leg, phone: str, role: LegRole, until: float) -> None:
        """Take new INVITEs from caller ``number`` as legs toward ``call``'s transfer target."""
        if not number:
            return
        watches = self._watches
        watches.append(TargetWatch(number, call, phone, role, until))
        if len(watches) > MAX_WATCHES:
            watches.popleft()
            self.dropped += 1

    def legs_for(
        self,
        msg: SipMessage,
        call_id: str,
        own_phone: str | None,
        to_phone: str | None,
        now: float,
    ) -> list[Leg]:
        """The legs toward a watched transfer's target that this new INVITE begins.

        ``own_phone`` is the watched phone that sent it itself (its own next call, never a
        target leg); a call *to* the transferring phone never counts either, nor the phone's
        consult INVITE. The PBX's leg toward the consult target does, though its From names
        the agent.
        """
        watches = self._watches
        while watches and watches[0].until < now:
            watches.popleft()
        if not watches:
            return []
        number = caller(msg)
        found: list[Leg] = []
        for watch in watches:
            if watch.until < now or watch.phone in (to_phone, own_phone):
                continue
            call = watch.call
            consult = call.consult
            if consult is not None and consult.call_id == call_id:
                continue
            if not numbers_match(number, watch.number):
                continue
            if call.removed or any(leg.customer is call for leg in found):
                continue
            found.append(_target_leg(msg, call_id, watch, now))
        return found


def _target_leg(msg: SipMessage, call_id: str, watch: TargetWatch, now: float) -> Leg:
    call = watch.call
    leg = Leg(call_id, watch.phone, False, now)
    leg.role = watch.role
    leg.customer = call
    leg.verified = True  # not the phone's leg: no Contact check applies
    leg.remote_tag = msg.from_tag
    leg.remote = user_of_uri(uri_of_header(msg.header("to") or ""))
    leg.invite_cseq = msg.cseq.number
    if call.targets is None:
        call.targets = []
    call.targets.append(leg)
    return leg


def caller(msg: SipMessage) -> str | None:
    """The calling party's number: P-Asserted-Identity when present, else the From user."""
    pai = msg.header("p-asserted-identity")
    if pai:
        user = user_of_uri(uri_of_header(pai))
        if user:
            return user
    return user_of_uri(uri_of_header(msg.header("from") or ""))
