"""Dialog tracking for watched agent phones: SIP messages in, call-leg changes out. No I/O.

Each watched phone's side of an INVITE dialog is a :class:`~bridge.hep.legs.Leg`: set up by
INVITE/1xx/2xx, ended by BYE, CANCEL or an error, put on hold and back by re-INVITE/UPDATE SDP,
carrying the REFERs the phone sends and the NOTIFYs it gets back. A second outgoing call while a
call is up is the *consult* of that call. Dialog states move only along
:data:`~bridge.hep.legs.LEG_STEPS`.

Proof of a transfer comes from the target's side, so the tracker also follows legs the phone is
not on (:mod:`bridge.hep.targets`): the legs toward the target, and the customer's own dialog
with a back-to-back PBX.

Time is the bridge's own receive time, ``now``, never a capture timestamp: a replayed capture or
a capture host whose clock is off must not decide when a dialog is forgotten. Memory is bounded
by :meth:`DialogTracker.expire`, whose next due time :meth:`next_deadline` reports, and by hard
caps that hold whatever a peer sends: at most ``max_live_per_phone`` live legs per phone (past
it the oldest still being set up goes), as many incoming calls not yet answered by the phone,
and ``max_legs`` legs in all (past it the least recently active Call-ID goes); each eviction is
counted (``evicted``). A new call's classification
looks only at the phone's answered calls (an index), so an INVITE storm for one phone costs the
same per INVITE as a single call.

Through a back-to-back PBX the agent's identity also appears on the PBX's *other* leg (the
customer's INVITE to the PBX is addressed to the agent's extension; the PBX's INVITE to a
customer carries the agent as From). Which leg is the phone's is told from who created or sent
each message and where the dialog's INVITE went, never from how a Contact is spelled: the rule
and its limits are in :mod:`bridge.hep.sides`.
"""

from __future__ import annotations

import heapq
import itertools

from bridge.hep.directory import PhoneDirectory
from bridge.hep.hold import on_offer, on_offer_answer
from bridge.hep.legs import (
    FOREIGN_ROLES,
    LEG_STEPS,
    DialogChange,
    Leg,
    LegAnswered,
    LegEnded,
    LegEvent,
    LegRinging,
    LegRole,
    LegStarted,
    LegState,
    ReferSent,
)
from bridge.hep.refers import on_notify, on_refer, on_refer_answer
from bridge.hep.replaces import ReplacingInvites
from bridge.hep.sides import Hop, OtherSides, origin_of, request_target
from bridge.hep.targets import CallerIndex, TargetWatches, caller, q850_cause
from bridge.model import TransferKind
from bridge.sip import SipMessage, SipParseError
from bridge.uris import uri_of_header, user_of_uri

__all__ = ["DialogTracker"]

# Answers after which the UA sends the same request again (same Call-ID, new CSeq): not an end.
RETRIED = frozenset({401, 407, 422, 491})
SETUP = frozenset({LegState.TRYING, LegState.EARLY})
MAX_LIVE_PER_PHONE = 64  # live legs of one phone (a real phone has a handful at most)
MAX_LEGS = 20_000  # legs tracked in all (~1.8 KB each)


class IllegalLegMove(ValueError):
    """A leg was asked to move along a pair that :data:`LEG_STEPS` does not list (a bug)."""


class DialogTracker:
    """Tracks the INVITE dialogs of the phones in ``directory`` and reports what changed."""

    def __init__(
        self,
        directory: PhoneDirectory,
        *,
        linger: float = 32.0,
        refer_linger: float = 180.0,
        setup_max: float = 300.0,
        idle_max: float = 4 * 3600.0,
        replace_window: float = 64.0,
        target_window: float = 300.0,
        consult_target_window: float = 32.0,
        max_live_per_phone: int = MAX_LIVE_PER_PHONE,
        max_legs: int = MAX_LEGS,
    ) -> None:
        self.directory = directory
        # Per phone: addresses known not to be that phone (a PBX, a proxy, callers).
        self.others = OtherSides()
        self.linger = linger  # after the end, for retransmitted BYEs and late NOTIFYs
        self.refer_linger = refer_linger  # after the end while a REFER may still get NOTIFYs
        self.setup_max = setup_max  # an INVITE that never gets an answer
        self.idle_max = idle_max  # a confirmed dialog whose BYE was never seen
        self.replace_window = replace_window
        self.target_window = target_window  # after a blind REFER: the target may ring long
        self.consult_target_window = consult_target_window  # the PBX dials the consult at once
        self.max_live_per_phone = max_live_per_phone
        self.max_legs = max_legs
        self.unmatched = 0
        self.evicted = 0  # legs dropped past a cap (not expired)
        self.targets = TargetWatches()
        self.callers = CallerIndex()
        # Call-ID -> its legs, least recently active first (the order evictions go by).
        self._legs: dict[str, list[Leg]] = {}
        # phone -> verified legs not yet ended, oldest first, each with its order of going live
        self._live: dict[str, dict[Leg, int]] = {}
        # phone -> those of its live legs that are answered (CONFIRMED): all _classify reads
        self._up: dict[str, dict[Leg, int]] = {}
        # phone -> incoming legs the phone has not answered yet (not live until it does)
        self._pending: dict[str, dict[Leg, None]] = {}
        self._live_seq = itertools.count()
        self._evicted: list[Leg] = []  # verified legs evicted, for the detector to forget
        # (phone, where the INVITE went) -> legs of INVITEs addressed to the phone, not yet ended
        # (verified or not): what a relay's own INVITE to the phone looks up
        self._incoming: dict[tuple[str, Hop], dict[Leg, None]] = {}
        self._count = 0
        self._heap: list[tuple[float, int, Leg]] = []
        self._seq = itertools.count()
        # Call-ID of an INVITE with Replaces -> (the legs it names, until when it may be answered).
        self.replacing = ReplacingInvites(replace_window)

    # -- inspection ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of legs tracked (live and lingering)."""
        return self._count

    def tracks(self, call_id: str) -> bool:
        """True while legs are tracked under ``call_id``."""
        return call_id in self._legs

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
        return call_id in self.replacing

    # -- feeding -------------------------------------------------------------------------------

    def feed(
        self, msg: SipMessage, now: float, src: Hop | None = None, dst: Hop | None = None
    ) -> list[DialogChange]:
        """Apply one (de-duplicated) message received at ``now`` (the bridge's clock); ``src``
        and ``dst`` are the packet's addresses from the HEP header when known. May raise
        ``SipParseError`` on a malformed header."""
        out: list[DialogChange] = []
        call_id = msg.call_id
        legs = self._legs.get(call_id)
        if legs is not None:  # least recently active first: move this Call-ID to the end
            del self._legs[call_id]
            self._legs[call_id] = legs
        if msg.is_request:
            method = msg.method or ""
            if legs is not None:
                self._request(legs, msg, method, now, out)
            elif method == "INVITE" and msg.to_tag is None:
                self._new_call(msg, call_id, now, out, dst)
            elif method in ("INVITE", "REFER"):
                self._adopt(msg, call_id, method, now, out)
            else:
                self.unmatched += 1
            return out
        code = msg.status_code or 0
        if self.replacing and 200 <= code < 300 and msg.cseq.method == "INVITE":
            self.replacing.answered(call_id, out)
        if legs is not None:
            self._response(legs, msg, code, now, out, src)
        elif not out:
            self.unmatched += 1
        return out

    # -- phone or PBX (bridge.hep.sides) -------------------------------------------------------

    def _relayed_by(self, phone: str, relay: Hop | None, call_id: str) -> None:
        """``relay`` just created an INVITE addressed to ``phone``: an earlier INVITE addressed
        to ``phone`` that went to ``relay`` began the relay's dialog (the customer's with a
        back-to-back PBX), not the phone's."""
        legs = self._incoming.get((phone, relay)) if relay is not None else None
        if legs:
            for leg in [g for g in legs if g.call_id != call_id]:
                self._drop(leg)

    def _new_call(
        self, msg: SipMessage, call_id: str, now: float, out: list[DialogChange], dst: Hop | None
    ) -> None:
        # `from_phone` may also be a PBX's leg carrying the agent as caller; who created the
        # INVITE (bridge.hep.sides) and the target watches tell them apart.
        from_tag = msg.from_tag
        calling = caller(msg)  # read once: the caller index, the target watches, the leg
        if msg.has_header("replaces"):
            self._note_replaces(msg, call_id, now)
        else:
            self.callers.note(calling, call_id, from_tag, now)
        match = self.directory.match_header
        from_phone = match(msg.header("from"))
        to_phone = match(msg.header("to"))
        if from_tag is None:
            self.unmatched += 1
            return
        number = msg.cseq.number
        legs: list[Leg] = []
        origin = origin_of(msg)
        own = (
            from_phone
            if from_phone is not None and not self.others.exclude(from_phone, origin)
            else None
        )
        sent_to = tuple(h for h in (dst, request_target(msg)) if h is not None)
        if own is not None:
            self.others.note(own, *sent_to)  # the phone's PBX or proxy
            leg = Leg(call_id, own, True, now)
            leg.phone_tag = from_tag
            leg.remote = user_of_uri(uri_of_header(msg.header("to") or ""))
            leg.invite_cseq = number
            legs.append(leg)
        if to_phone is not None and to_phone != from_phone:
            self.others.note(to_phone, origin)  # a phone never calls itself
            self._relayed_by(to_phone, origin, call_id)
            leg = Leg(call_id, to_phone, False, now)
            leg.remote_tag = from_tag
            leg.remote = calling
            leg.invite_cseq = number
            leg.sent_to = sent_to
            for hop in sent_to:
                self._incoming.setdefault((to_phone, hop), {})[leg] = None
            legs.append(leg)
        legs += self.targets.legs_for(msg, call_id, calling, own, to_phone, now)
        if not legs:
            self.unmatched += 1
            return
        self._add(call_id, legs, now)
        for leg in legs:
            if leg.verified and leg.role not in FOREIGN_ROLES:
                self._classify(leg)
                self._make_live(leg)
                out.append(LegStarted(leg))
                if leg.role is LegRole.CONSULT and leg.customer is not None:
                    # The PBX's leg toward the consult target carries the agent as caller.
                    agent = user_of_uri(uri_of_header(msg.header("from") or ""))
                    self._watch(agent, leg.customer, leg.phone, LegRole.CONSULT_TARGET, now)

    # -- legs toward a transfer's target -------------------------------------------------------

    def _watch(self, number: str | None, call: Leg, phone: str, role: LegRole, now: float) -> None:
        """Take new INVITEs from caller ``number`` as legs toward ``call``'s transfer target."""
        window = self.target_window if role is LegRole.TARGET else self.consult_target_window
        self.targets.watch(number, call, phone, role, now + window)

    def _adopt(
        self, msg: SipMessage, call_id: str, method: str, now: float, out: list[DialogChange]
    ) -> None:
        """Pick up a dialog begun before we watched, from an in-dialog request the phone sent."""
        from_tag, to_tag = msg.from_tag, msg.to_tag
        phone = self.directory.match_header(msg.header("from"))
        if (
            from_tag is None
            or to_tag is None
            or phone is None
            or self.others.exclude(phone, origin_of(msg))
        ):
            self.unmatched += 1
            return
        leg = Leg(call_id, phone, True, now)
        leg.phone_tag, leg.remote_tag = from_tag, to_tag
        leg.remote = user_of_uri(uri_of_header(msg.header("to") or ""))
        _goto(leg, LegEvent.ADOPTED)
        self._add(call_id, [leg], now)
        self._make_live(leg)
        self._request([leg], msg, method, now, out)

    def _add(self, call_id: str, legs: list[Leg], now: float) -> None:
        self._legs[call_id] = legs
        self._count += len(legs)
        for leg in legs:
            self._schedule(leg, now + self.setup_max)
            if not leg.verified:
                pending = self._pending.setdefault(leg.phone, {})
                pending[leg] = None
                if len(pending) > self.max_live_per_phone:  # a storm of calls to the phone
                    self._evict_leg(next(iter(pending)))
        while self._count > self.max_legs and self._legs:
            self._evict_call(next(iter(self._legs)))

    # -- bounds --------------------------------------------------------------------------------

    def _make_live(self, leg: Leg) -> None:
        """``leg`` is verified and not ended; past the phone's cap its oldest live leg goes."""
        pending = self._pending.get(leg.phone)
        if pending is not None and pending.pop(leg, 0) is None and not pending:
            del self._pending[leg.phone]
        live = self._live.setdefault(leg.phone, {})
        if leg in live:
            return
        live[leg] = order = next(self._live_seq)
        if leg.state is LegState.CONFIRMED:
            self._up.setdefault(leg.phone, {})[leg] = order
        if len(live) > self.max_live_per_phone:
            # The oldest call still being set up goes first: a storm of INVITEs must not push
            # out the phone's answered call (only when every live leg is answered does one go).
            up = self._up.get(leg.phone, {})
            victim = next((other for other in live if other not in up), next(iter(live)))
            self._evict_leg(victim)

    def _evict_leg(self, leg: Leg) -> None:
        self._drop(leg)
        self.evicted += 1
        if leg.verified:
            self._evicted.append(leg)

    def _evict_call(self, call_id: str) -> None:
        for leg in tuple(self._legs.get(call_id, ())):
            self._evict_leg(leg)
        self._legs.pop(call_id, None)

    def take_evicted(self) -> list[Leg]:
        """The verified legs evicted since the last call (their detector state is stale)."""
        evicted, self._evicted = self._evicted, []
        return evicted

    def _classify(self, leg: Leg) -> None:
        """A new outgoing call while another call of the phone is up is that call's consult."""
        best: Leg | None = None
        best_key = (False, 0.0, -1)
        for other, order in self._up.get(leg.phone, {}).items():
            if other.call_id == leg.call_id:
                continue
            # The call just put on hold; else the latest active one (a stale leg whose BYE was
            # missed has an old last_at); on a tie, the one that went live last.
            key = (other.held, other.last_at, order)
            if best is None or key >= best_key:
                best, best_key = other, key
        if best is not None:
            customer = best.customer_leg
            leg.role = LegRole.CONSULT
            leg.customer = customer
            customer.consult = leg

    # -- requests ------------------------------------------------------------------------------

    def _request(
        self, legs: list[Leg], msg: SipMessage, method: str, now: float, out: list[DialogChange]
    ) -> None:
        from_tag = msg.from_tag
        for leg in tuple(legs):
            if now > leg.last_at:
                leg.last_at = now
            if leg.phone_tag is not None:
                by_phone = from_tag == leg.phone_tag
            else:
                by_phone = from_tag != leg.remote_tag
            if method == "BYE":
                if leg.state is not LegState.TERMINATED:
                    q850 = q850_cause(msg) if leg.role is LegRole.CUSTOMER_SIDE else None
                    self._end(leg, by_phone, "bye", None, now, out, q850=q850)
            elif method == "INVITE" or method == "UPDATE":
                self._offer(leg, msg, method)
            elif method == "CANCEL":
                if leg.state in SETUP:
                    self._end(leg, by_phone, "cancel", None, now, out)
            elif leg.role in FOREIGN_ROLES:
                continue  # not the phone's dialog: only its set-up and end matter
            elif method == "REFER":
                if by_phone and leg.verified:
                    self.evicted += on_refer(leg, msg, out)
                    self._after_refer(out, now)
            elif method == "NOTIFY" and not by_phone and leg.verified:
                self.evicted += on_notify(leg, msg, out)

    def _after_refer(self, out: list[DialogChange], now: float) -> None:
        """After a blind REFER the customer's number calling out is the leg to the target; after
        a blind or semi-attended one, the customer's own dialog with the PBX is followed."""
        change = out[-1] if out else None
        if not isinstance(change, ReferSent):
            return
        call = change.leg.customer_leg
        if change.refer.kind is TransferKind.BLIND:
            self._watch(call.remote, call, call.phone, LegRole.TARGET, now)
        if change.refer.kind in (TransferKind.BLIND, TransferKind.SEMI_ATTENDED):
            self._follow_customer_side(call, now)

    def _follow_customer_side(self, call: Leg, now: float) -> None:
        """Track the customer's own dialog with a back-to-back PBX, if one was seen lately."""
        own = {leg.call_id for leg in self._live.get(call.phone, ())} | {call.call_id}
        invite = self.callers.latest(call.remote, own, now)
        if invite is None or invite.call_id in self._legs:
            return
        leg = Leg(invite.call_id, call.phone, False, now)
        leg.role = LegRole.CUSTOMER_SIDE
        leg.customer = call
        leg.verified = True
        leg.remote_tag = invite.from_tag  # the customer's tag: its own BYE is "not by phone"
        _goto(leg, LegEvent.ADOPTED)
        self._add(invite.call_id, [leg], now)

    def _offer(self, leg: Leg, msg: SipMessage, method: str) -> None:
        if msg.to_tag is not None:
            on_offer(leg, msg, method)
        elif method == "INVITE" and leg.state in SETUP:
            leg.invite_cseq = msg.cseq.number  # sent again after 401/407: same dialog

    def _note_replaces(self, msg: SipMessage, call_id: str, now: float) -> None:
        try:
            replaces = msg.replaces()
        except SipParseError:
            return
        if replaces is not None:
            named = self._legs.get(replaces.call_id, ())
            self.replacing.note(call_id, replaces, named, now)

    # -- responses -----------------------------------------------------------------------------

    def _response(
        self,
        legs: list[Leg],
        msg: SipMessage,
        code: int,
        now: float,
        out: list[DialogChange],
        src: Hop | None,
    ) -> None:
        cseq = msg.cseq
        method = cseq.method
        for leg in tuple(legs):
            if now > leg.last_at:
                leg.last_at = now
            # Each side numbers its own requests: a re-INVITE may reuse the INVITE's number.
            if method == "INVITE" and cseq.number == leg.invite_cseq and leg.state in SETUP:
                self._setup_answer(leg, msg, code, now, out, src)
            elif cseq.number == leg.offer_cseq and method == leg.offer_method:
                on_offer_answer(leg, msg, code, out)
            elif method == "REFER" and leg.refers and msg.from_tag == leg.phone_tag:
                on_refer_answer(leg, msg, code, out)

    def _setup_answer(
        self,
        leg: Leg,
        msg: SipMessage,
        code: int,
        now: float,
        out: list[DialogChange],
        src: Hop | None,
    ) -> None:
        if code == 100:
            return
        if code >= 300:
            if code not in RETRIED:
                cause = "cancelled" if code == 487 else "rejected"
                status = f"SIP/2.0 {code} {msg.reason or ''}".rstrip()
                self._end(leg, not leg.outgoing, cause, code, now, out, status)
            return
        if not leg.verified:
            if self.others.exclude(leg.phone, src):
                self._drop(leg)  # the PBX answered: this is its leg, not the phone's
                return
            leg.verified = True
            self._make_live(leg)
            out.append(LegStarted(leg))
        if code < 200:
            if leg.state is LegState.TRYING:
                _goto(leg, LegEvent.PROVISIONAL)
                out.append(LegRinging(leg, code))
            return
        to_tag = msg.to_tag
        if leg.outgoing:
            leg.remote_tag = to_tag
        else:
            leg.phone_tag = to_tag
        _goto(leg, LegEvent.ANSWERED)
        order = self._live.get(leg.phone, {}).get(leg)
        if order is not None:
            self._up.setdefault(leg.phone, {})[leg] = order
        out.append(LegAnswered(leg))

    # -- ending and expiry ---------------------------------------------------------------------

    def _end(
        self,
        leg: Leg,
        by_phone: bool,
        cause: str,
        code: int | None,
        now: float,
        out: list[DialogChange],
        status: str | None = None,
        *,
        q850: int | None = None,
    ) -> None:
        if not leg.verified:
            self._drop(leg)
            return
        prior = leg.state
        _goto(leg, LegEvent.ENDED)
        leg.ended_at = now
        leg.offer = leg.offer_cseq = leg.offer_method = None
        self._unlive(leg)
        self._schedule(leg, self._deadline(leg))
        out.append(LegEnded(leg, prior, by_phone, cause, code, status, q850))

    def _unlive(self, leg: Leg) -> None:
        for hop in leg.sent_to:
            key = (leg.phone, hop)
            incoming = self._incoming.get(key)
            if incoming is not None:
                incoming.pop(leg, None)
                if not incoming:
                    del self._incoming[key]
        index: dict[str, dict[Leg, int]] | dict[str, dict[Leg, None]]
        for index in (self._live, self._up, self._pending):
            legs = index.get(leg.phone)
            if legs is not None:
                legs.pop(leg, None)
                if not legs:
                    del index[leg.phone]

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
        heap = self._heap
        if len(heap) > 2 * self._count + 4096:
            # Entries of dropped (evicted) legs would wait for their deadline: shed them now.
            heap[:] = [entry for entry in heap if not entry[2].removed]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._seq), leg))

    def _deadline(self, leg: Leg) -> float:
        if leg.state is LegState.TERMINATED and leg.ended_at is not None:
            linger = self.refer_linger if leg.awaiting_notify() else self.linger
            return leg.ended_at + linger
        if leg.role is LegRole.CUSTOMER_SIDE:
            return leg.last_at + self.target_window  # only the transfer's outcome matters
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
        replacing = self.replacing.next_deadline()
        if replacing is not None:
            times.append(replacing)
        return min(times) if times else None

    def expire(self, now: float) -> list[Leg]:
        """Drop legs past their linger or idle limit; returns the (verified) legs dropped, and
        those evicted at a cap since :meth:`take_evicted` last ran."""
        dropped: list[Leg] = self.take_evicted()
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
        self.replacing.expire(now)
        return dropped


def _goto(leg: Leg, event: LegEvent) -> None:
    """Move ``leg`` along :data:`LEG_STEPS`; a move the table does not list is a bug."""
    try:
        leg.state = LEG_STEPS[leg.state, event]
    except KeyError:
        raise IllegalLegMove(f"{leg!r} cannot take {event}") from None
