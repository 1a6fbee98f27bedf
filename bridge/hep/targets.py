"""Legs toward a transfer's target that the agent's phone is not on; no I/O.

The proof that a person at the target has the customer is on such a leg, so the dialog tracker
watches, for a while, for new INVITEs that belong to a transfer: after a blind REFER, those
whose caller is the customer (the PBX's or the transferee's leg toward the target); after the
phone starts a consult, those whose caller is the agent and which are not the phone's own (the
PBX's leg toward the consult target, which decides a semi-attended transfer). After a blind or
semi-attended REFER it also finds the customer's own dialog with a back-to-back PBX among the
new INVITEs it remembers (:class:`CallerIndex`): the PBX ending that dialog with a target-side
Q.850 cause (:func:`q850_cause`) tells that the customer was dropped.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from bridge.hep.legs import Leg, LegRole
from bridge.sip import SipMessage
from bridge.uris import MIN_SUFFIX_DIGITS, digits, numbers_match, uri_of_header, user_of_uri

__all__ = ["MAX_WATCHES", "CallerIndex", "TargetWatch", "TargetWatches", "caller", "q850_cause"]

MAX_WATCHES = 4096  # open watches; the oldest is dropped (and counted) past this
MAX_WATCHES_PER_NUMBER = 16  # open watches for one caller number (each new INVITE reads them all)
MAX_CALLERS = 10_000  # remembered new INVITEs; the oldest is dropped (and counted) past this
MAX_TARGET_LEGS = 16  # legs toward one call's transfer target; more are not taken (counted)


class TargetWatch(NamedTuple):
    """Which new INVITEs are legs toward a transfer's target: caller ``number``, not the
    transferring ``phone``'s own legs, until ``until`` (receive time)."""

    number: str
    call: Leg
    phone: str
    role: LegRole
    until: float


def number_key(number: str) -> str:
    """What two numbers that `numbers_match` share: their last 7 digits (all of them when
    shorter), or the lower-cased text of a number without digits."""
    only = digits(number)
    return only[-MIN_SUFFIX_DIGITS:] if only else number.strip().lower()


class TargetWatches:
    """The open watches, oldest first, bounded by :data:`MAX_WATCHES`; found by caller number
    so that each new INVITE costs one look-up, however many transfers are under way."""

    def __init__(self) -> None:
        self._watches: deque[TargetWatch] = deque()
        self._by_key: dict[str, list[TargetWatch]] = {}
        self._stale = 0  # entries of _watches already dropped from _by_key (per-number cap)
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._watches) - self._stale

    def watch(self, number: str | None, call: Leg, phone: str, role: LegRole, until: float) -> None:
        """Take new INVITEs from caller ``number`` as legs toward ``call``'s transfer target."""
        if not number:
            return
        watch = TargetWatch(number, call, phone, role, until)
        self._watches.append(watch)
        same = self._by_key.setdefault(number_key(number), [])
        same.append(watch)
        if len(same) > MAX_WATCHES_PER_NUMBER:  # an INVITE storm from one number
            del same[0]
            self._stale += 1
            self.dropped += 1
        if len(self._watches) > MAX_WATCHES and self._forget(self._watches.popleft()):
            self.dropped += 1

    def _forget(self, watch: TargetWatch) -> bool:
        """Drop ``watch`` (just taken off the queue); False if the per-number cap had."""
        key = number_key(watch.number)
        same = self._by_key.get(key)
        if same is None or not any(w is watch for w in same):
            self._stale -= 1
            return False
        same.remove(watch)
        if not same:
            del self._by_key[key]
        return True

    def legs_for(
        self,
        msg: SipMessage,
        call_id: str,
        number: str | None,
        own_phone: str | None,
        to_phone: str | None,
        now: float,
    ) -> list[Leg]:
        """The legs toward a watched transfer's target that this new INVITE, from caller
        ``number`` (:func:`caller`), begins.

        ``own_phone`` is the watched phone that sent it itself (its own next call, never a
        target leg); a call *to* the transferring phone never counts either, nor the phone's
        consult INVITE. The PBX's leg toward the consult target does, though its From names
        the agent.
        """
        watches = self._watches
        while watches and watches[0].until < now:
            self._forget(watches.popleft())
        if not watches:
            return []
        if not number:
            return []
        found: list[Leg] = []
        for watch in list(self._by_key.get(number_key(number), ())):
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
            if call.targets is not None and len(call.targets) >= MAX_TARGET_LEGS:
                self.dropped += 1  # an INVITE storm from the customer's number
                continue
            found.append(_target_leg(msg, call_id, watch, now))
        return found


class RecentInvite(NamedTuple):
    """A new INVITE seen lately: who called, its dialog, when (receive time)."""

    number: str
    call_id: str
    from_tag: str
    at: float


class CallerIndex:
    """The new INVITEs of the last ``window`` seconds by caller number, bounded.

    A back-to-back PBX's leg with the customer (the customer's INVITE to the PBX, to a queue or
    to the agent's extension) is no watched phone's; when a transfer starts, this is how it is
    found, so that the PBX dropping the customer can be seen.
    """

    def __init__(self, window: float = 600.0, limit: int = MAX_CALLERS) -> None:
        self.window = window
        self.limit = limit
        self._order: deque[RecentInvite] = deque()
        self._by_number: dict[str, list[RecentInvite]] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._order)

    def note(self, number: str | None, call_id: str, from_tag: str | None, now: float) -> None:
        """Remember a new INVITE from ``number``."""
        self._forget(now)
        if not number or not from_tag:
            return
        invite = RecentInvite(number, call_id, from_tag, now)
        self._order.append(invite)
        self._by_number.setdefault(number, []).append(invite)
        if len(self._order) > self.limit:
            self._drop(self._order.popleft())
            self.dropped += 1

    def latest(self, number: str | None, exclude: set[str], now: float) -> RecentInvite | None:
        """The newest INVITE from ``number`` (by exact digits) whose Call-ID is not excluded."""
        self._forget(now)
        for invite in reversed(self._by_number.get(number or "", ())):
            if invite.call_id not in exclude:
                return invite
        return None

    def _forget(self, now: float) -> None:
        order = self._order
        while order and order[0].at < now - self.window:
            self._drop(order.popleft())

    def _drop(self, invite: RecentInvite) -> None:
        same = self._by_number.get(invite.number)
        if same:
            same.remove(invite)
            if not same:
                del self._by_number[invite.number]


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


def q850_cause(msg: SipMessage) -> int | None:
    """The cause of a ``Reason: Q.850;cause=17`` header (RFC 3326), if there is one."""
    for part in (msg.header("reason") or "").split(";")[1:]:
        name, _, value = part.partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "cause" and value.isascii() and value.isdigit():
            return int(value[:4])
    return None
