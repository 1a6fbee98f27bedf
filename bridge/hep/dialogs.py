"""Dialog tracking for watched agent phones: SIP messages in, call-leg changes out. No I/O.

Each watched phone's side of an INVITE dialog is a :class:`~bridge.hep.legs.Leg`: set up by
INVITE/1xx/2xx, ended by BYE, CANCEL or an error, put on hold and back by re-INVITE/UPDATE SDP,
carrying the REFERs the phone sends and the NOTIFYs it gets back. A second outgoing call while a
call is up is the *consult* of that call. Time is the capture time passed in as ``at``; memory
is bounded by :meth:`DialogTracker.expire`, whose next due time :meth:`next_deadline` reports.

Through a back-to-back PBX the agent's identity also appears on the PBX's *other* leg (the
customer's INVITE to the PBX is addressed to the agent's extension; the PBX's INVITE to a
customer carries the agent as From). With ``contact_check`` a leg only counts as the phone's
when the phone's side of it shows the phone's own user part in its Contact: the PBX's Contact
(``sip:asterisk@...`` or no user at all) does not.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from bridge.hep.directory import PhoneDirectory
from bridge.hep.hold import on_offer, on_offer_answer
from bridge.hep.legs import (
    DialogChange,
    DialogReplaced,
    Leg,
    LegAnswered,
    LegEnded,
    LegRinging,
    LegRole,
    LegStarted,
    LegState,
)
from bridge.hep.refers import on_notify, on_refer, on_refer_answer
from bridge.sip import ReplacesParams, SipMessage, SipParseError
from bridge.uris import uri_of_header, user_of_uri

__all__ = ["DialogTracker"]

# Answers after which the UA sends the same request again (same Call-ID, new CSeq): not an end.
RETRIED = frozenset({401, 407, 422, 491})
SETUP = frozenset({LegState.TRYING, LegState.EARLY})


class DialogTracker:
    """Tracks the INVITE dialogs of the phones in ``directory`` and reports what changed."""

    def __init__(
        self,
        directory: PhoneDirectory,
        *,
        contact_check: bool = True,
        linger: float = 32.0,
        refer_linger: float = 180.0,
        setup_max: float = 300.0,
        idle_max: float = 4 * 3600.0,
        replace_window: float = 64.0,
    ) -> None:
        self.directory = directory
        self.contact_check = contact_check
        self.linger = linger  # after the end, for retransmitted BYEs and late NOTIFYs
        self.refer_linger = refer_linger  # after the end while a REFER may still get NOTIFYs
        self.setup_max = setup_max  # an INVITE that never gets an answer
        self.idle_max = idle_max  # a confirmed dialog whose BYE was never seen
        self.replace_window = replace_window
        self.unmatched = 0
        self._legs: dict[str, list[Leg]] = {}
        self._live: dict[str, dict[Leg, None]] = {}  # phone -> verified legs not yet ended
        self._count = 0
        self._heap: list[tuple[float, int, Leg]] = []
        self._seq = itertools.count()
        # Call-ID of an INVITE with Replaces -> (the legs it names, until when it may be answered).
        self._replacing: dict[str, tuple[tuple[Leg, ...], float]] = {}
        self._replace_order: deque[tuple[float, str]] = deque()

    # -- inspection ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of legs tracked (live and lingering)."""
        return self._count

    def legs(self, call_id: str) -> tuple[Leg, ...]:
        """The legs tracked under a Call-ID."""
        return tuple(self._legs.get(call_id, ()))

    def may_concern(self, msg: SipMessage) -> bool:
        """Cheap pre-check: False for a message no tracked or new leg could care about."""
        call_id = msg.call_id
        if call_id in self._legs:
            return True
        if msg.is_request:
            return msg.method == "INVITE" or msg.method == "REFER"
        return call_id in self._replacing

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, msg: SipMessage, at: float) -> list[DialogChange]:
        """Apply one (de-duplicated) message; may raise ``SipParseError`` on a malformed header."""
        out: list[DialogChange] = []
        call_id = msg.call_id
        legs = self._legs.get(call_id)
        if msg.is_request:
            method = msg.method or ""
            if legs is not None:
                self._request(legs, msg, method, at, out)
            elif method == "INVITE" and msg.to_tag is None:
                self._new_call(msg, call_id, at, out)
            elif method in ("INVITE", "REFER"):
                self._adopt(msg, call_id, method, at, out)
            else:
                self.unmatched += 1
            return out
        code = msg.status_code or 0
        if self._replacing and 200 <= code < 300 and msg.cseq.method == "INVITE":
            self._replaced(call_id, out)
        if legs is not None:
            self._response(legs, msg, code, at, out)
        elif not out:
            self.unmatched += 1
        return out

    def _sent_by_phone(self, msg: SipMessage, phone: str) -> bool:
        """True unless the message's Contact names someone other than the phone (a PBX)."""
        if not self.contact_check:
            return True
        contact = msg.header("contact")
        if not contact:
            return True
        return user_of_uri(uri_of_header(contact)) == self.directory.user_of(phone)

    def _new_call(self, msg: SipMessage, call_id: str, at: float, out: list[DialogChange]) -> None:
        from_tag = msg.from_tag
        if msg.has_header("replaces"):
            self._note_replaces(msg, call_id, at)
        match = self.directory.match_header
        from_phone = match(msg.header("from"))
        to_phone = match(msg.header("to"))
        if from_tag is None or (from_phone is None and to_phone is None):
            self.unmatched += 1
            return
        number = msg.cseq.number
        legs: list[Leg] = []
        if from_phone is not None and self._sent_by_phone(msg, from_phone):
            leg = Leg(call_id, from_phone, True, at)
            leg.phone_tag = from_tag
            leg.remote = user_of_uri(uri_of_header(msg.header("to") or ""))
            leg.invite_cseq = number
            legs.append(leg)
        if to_phone is not None and to_phone != from_phone:
            leg = Leg(call_id, to_phone, False, at)
            leg.remote_tag = from_tag
            leg.remote = _caller(msg)
            leg.invite_cseq = number
            legs.append(leg)
        if not legs:
            self.unmatched += 1
            return
        self._add(call_id, legs, at)
        for leg in legs:
            if leg.verified:
                self._classify(leg)
                self._live.setdefault(leg.phone, {})[leg] = None
                out.append(LegStarted(leg))

    def _adopt(
        self, msg: SipMessage, call_id: str, method: str, at: float, out: list[DialogChange]
    ) -> None:
        """Pick up a dialog begun before we watched, from an in-dialog request the phone sent."""
        from_tag, to_tag = msg.from_tag, msg.to_tag
        phone = self.directory.match_header(msg.header("from"))
        if (
            from_tag is None
            or to_tag is None
            or phone is None
            or not self._sent_by_phone(msg, phone)
        ):
            self.unmatched += 1
            return
        leg = Leg(call_id, phone, True, at)
        leg.phone_tag, leg.remote_tag = from_tag, to_tag
        leg.remote = user_of_uri(uri_of_header(msg.header("to") or ""))
        leg.state = LegState.CONFIRMED
        self._add(call_id, [leg], at)
        self._live.setdefault(phone, {})[leg] = None
        self._request([leg], msg, method, at, out)

    def _add(self, call_id: str, legs: list[Leg], at: float) -> None:
        self._legs[call_id] = legs
        self._count += len(legs)
        for leg in legs:
            self._schedule(leg, at + self.setup_max)

    def _classify(self, leg: Leg) -> None:
        """A new outgoing call while another call of the phone is up is that call's consult."""
        best: Leg | None = None
        for other in self._live.get(leg.phone, {}):
            if other.state is not LegState.CONFIRMED or other.call_id == leg.call_id:
                continue
            # The call just put on hold; else the latest active one (a stale leg whose BYE was
            # missed has an old last_at).
            if best is None or (other.held, other.last_at) >= (best.held, best.last_at):
                best = other
        if best is not None:
            customer = best.customer_leg
            leg.role = LegRole.CONSULT
            leg.customer = customer
            customer.consult = leg

    # -- requests ------------------------------------------------------------------------------

    def _request(
        self, legs: list[Leg], msg: SipMessage, method: str, at: float, out: list[DialogChange]
    ) -> None:
        from_tag = msg.from_tag
        for leg in tuple(legs):
            if at > leg.last_at:
                leg.last_at = at
            if leg.phone_tag is not None:
                by_phone = from_tag == leg.phone_tag
            else:
                by_phone = from_tag != leg.remote_tag
            if method == "BYE":
                if leg.state is not LegState.TERMINATED:
                    self._end(leg, by_phone, "bye", None, at, out)
            elif method == "INVITE" or method == "UPDATE":
                self._offer(leg, msg, method)
            elif method == "CANCEL":
                if leg.state in SETUP:
                    self._end(leg, by_phone, "cancel", None, at, out)
            elif method == "REFER":
                if by_phone and leg.verified:
                    on_refer(leg, msg, out)
            elif method == "NOTIFY" and not by_phone and leg.verified:
                on_notify(leg, msg, out)

    def _offer(self, leg: Leg, msg: SipMessage, method: str) -> None:
        if msg.to_tag is not None:
            on_offer(leg, msg, method)
        elif method == "INVITE" and leg.state in SETUP:
            leg.invite_cseq = msg.cseq.number  # sent again after 401/407: same dialog

    def _note_replaces(self, msg: SipMessage, call_id: str, at: float) -> None:
        try:
            replaces = msg.replaces()
        except SipParseError:
            return
        if replaces is None:
            return
        named = tuple(
            leg
            for leg in self._legs.get(replaces.call_id, ())
            if leg.verified and _tags_match(leg, replaces)
        )
        if named:
            deadline = at + self.replace_window
            self._replacing[call_id] = (named, deadline)
            self._replace_order.append((deadline, call_id))

    # -- responses -----------------------------------------------------------------------------

    def _response(
        self, legs: list[Leg], msg: SipMessage, code: int, at: float, out: list[DialogChange]
    ) -> None:
        cseq = msg.cseq
        method = cseq.method
        for leg in tuple(legs):
            if at > leg.last_at:
                leg.last_at = at
            # Each side numbers its own requests: a re-INVITE may reuse the INVITE's number.
            if method == "INVITE" and cseq.number == leg.invite_cseq and leg.state in SETUP:
                self._setup_answer(leg, msg, code, at, out)
            elif cseq.number == leg.offer_cseq and method == leg.offer_method:
                on_offer_answer(leg, msg, code, out)
            elif method == "REFER" and leg.refers and msg.from_tag == leg.phone_tag:
                on_refer_answer(leg, msg, code, out)

    def _setup_answer(
        self, leg: Leg, msg: SipMessage, code: int, at: float, out: list[DialogChange]
    ) -> None:
        if code == 100:
            return
        if code >= 300:
            if code not in RETRIED:
                cause = "cancelled" if code == 487 else "rejected"
                self._end(leg, not leg.outgoing, cause, code, at, out)
            return
        if not leg.verified:
            if not self._sent_by_phone(msg, leg.phone):
                self._drop(leg)  # the PBX answered: this is its leg, not the phone's
                return
            leg.verified = True
            self._live.setdefault(leg.phone, {})[leg] = None
            out.append(LegStarted(leg))
        if code < 200:
            if leg.state is LegState.TRYING:
                leg.state = LegState.EARLY
                out.append(LegRinging(leg, code))
            return
        to_tag = msg.to_tag
        if leg.outgoing:
            leg.remote_tag = to_tag
        else:
            leg.phone_tag = to_tag
        leg.state = LegState.CONFIRMED
        out.append(LegAnswered(leg))

    def _replaced(self, call_id: str, out: list[DialogChange]) -> None:
        entry = self._replacing.pop(call_id, None)
        if entry is None:
            return
        for leg in entry[0]:
            if not leg.removed and not leg.replaced:
                leg.replaced = True
                out.append(DialogReplaced(leg))

    # -- ending and expiry ---------------------------------------------------------------------

    def _end(
        self,
        leg: Leg,
        by_phone: bool,
        cause: str,
        code: int | None,
        at: float,
        out: list[DialogChange],
    ) -> None:
        if not leg.verified:
            self._drop(leg)
            return
        prior = leg.state
        leg.state = LegState.TERMINATED
        leg.ended_at = at
        leg.offer = leg.offer_cseq = leg.offer_method = None
        self._unlive(leg)
        self._schedule(leg, self._deadline(leg))
        out.append(LegEnded(leg, prior, by_phone, cause, code))

    def _unlive(self, leg: Leg) -> None:
        live = self._live.get(leg.phone)
        if live is not None:
            live.pop(leg, None)
            if not live:
                del self._live[leg.phone]

    def _drop(self, leg: Leg) -> None:
        leg.removed = True
        self._unlive(leg)
        legs = self._legs.get(leg.call_id)
        if legs is not None and leg in legs:
            legs.remove(leg)
            self._count -= 1
            if not legs:
                del self._legs[leg.call_id]

    def _schedule(self, leg: Leg, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), leg))

    def _deadline(self, leg: Leg) -> float:
        if leg.state is LegState.TERMINATED and leg.ended_at is not None:
            linger = self.refer_linger if leg.awaiting_notify() else self.linger
            return leg.ended_at + linger
        if leg.state is LegState.CONFIRMED:
            return leg.last_at + self.idle_max
        return leg.last_at + self.setup_max

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`expire` may have something to drop (it may find nothing)."""
        heap = self._heap
        while heap and heap[0][2].removed:  # entries left behind by dropped legs
            heapq.heappop(heap)
        times = []
        if heap:
            times.append(heap[0][0])
        if self._replace_order:
            times.append(self._replace_order[0][0])
        return min(times) if times else None

    def expire(self, now: float) -> list[Leg]:
        """Drop legs past their linger or idle limit; returns the (verified) legs dropped."""
        dropped: list[Leg] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, leg = heapq.heappop(heap)
            if leg.removed:
                continue
            deadline = self._deadline(leg)
            if deadline > now:
                self._schedule(leg, deadline)
                continue
            self._drop(leg)
            if leg.verified:
                dropped.append(leg)
        order = self._replace_order
        while order and order[0][0] <= now:
            _, call_id = order.popleft()
            entry = self._replacing.get(call_id)
            if entry is not None and entry[1] <= now:
                del self._replacing[call_id]
        return dropped


def _caller(msg: SipMessage) -> str | None:
    """The calling party's number: P-Asserted-Identity when present, else the From user."""
    pai = msg.header("p-asserted-identity")
    if pai:
        user = user_of_uri(uri_of_header(pai))
        if user:
            return user
    return user_of_uri(uri_of_header(msg.header("from") or ""))


def _tags_match(leg: Leg, replaces: ReplacesParams) -> bool:
    tags = {replaces.to_tag, replaces.from_tag}
    if leg.phone_tag is not None and leg.remote_tag is not None:
        return {leg.phone_tag, leg.remote_tag} == tags
    return leg.phone_tag in tags or leg.remote_tag in tags
