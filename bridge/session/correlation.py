"""Which session a phone event belongs to: exact matches only, ambiguity reported, never guessed.

docs/api.md, "Binding a session to the phone call": by `call.sip_call_id` when the desktop
gave it; otherwise by the agent's phone plus the customer's number on the one *live* call of
that phone with that number.

A call is live while a source says it is ringing, connected or held, unless the evidence shows
it is stale (`stale_reason`): its end was never captured, or it is a leftover of garbage.

- An early call (no final response) quiet for longer than SIP's own INVITE transaction limit,
  64*T1 = 32 s, is not live (`no_final_response`) until something is heard from it again.
- A newer call between the same phone and the same customer, seen by the same source,
  supersedes an older call that has shown no traffic since the newer one started
  (`superseded`): a single-line phone cannot hold two calls with one customer unnoticed (a
  second line or call waiting shows on the older call: a hold, a re-INVITE). An older call
  that was answered is superseded only once the newer one is answered too, so a call waiting
  that only rings does not move a session off the call the agent is on.

A session bound by phone and number keeps its call while that call is live. It rebinds when the
call it holds is proven stale and exactly one live call is left, or when its call ended and the
same customer calls the phone again before any transfer was made; every rebinding says why.
Two live calls that really exist stay `ambiguous`, with the candidates listed so the desktop
can pick one. Time here is the bridge's own clock (any monotonic seconds), never a source's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from bridge.model import (
    Binding,
    CallCandidate,
    CallState,
    Session,
    SessionStatus,
    TransferState,
)
from bridge.uris import numbers_match

LIVE_CALL = frozenset({CallState.RINGING, CallState.CONNECTED, CallState.ON_HOLD})
ANSWERED = frozenset({CallState.CONNECTED, CallState.ON_HOLD})
RECENT_CALLS = 64  # ended calls remembered per phone, for evidence that comes after the end
LIVE_CALLS = 64  # calls held live per phone; past it the longest quiet one is forgotten
T1 = 0.5  # RFC 3261's round-trip estimate
EARLY_LIMIT = 64 * T1  # an INVITE transaction gives up after this without a final response
IDLE_LIMIT = 4 * 3600.0  # an answered call heard nothing from for this long is forgotten
# Sessions may follow their customer to a new call after theirs ended only while no transfer
# was made or is under way: a transferred session keeps the call it was transferred on.
FOLLOWS_CUSTOMER = frozenset({TransferState.NONE, TransferState.FAILED})

# Why a binding changed (audit `call_binding`, `detail.reason`).
ONLY_LIVE_CALL = "only_live_call"
ONLY_CALL_NUMBER_UNKNOWN = "only_call_number_unknown"
SEVERAL_LIVE_CALLS = "several_live_calls"
SESSIONS_SHARE_CALL = "sessions_share_call"
NO_LIVE_CALL = "no_live_call"
SUPERSEDED = "superseded"
NO_FINAL_RESPONSE = "no_final_response"
CALLED_AGAIN = "called_again"


@dataclass(slots=True)
class PhoneCall:
    """A call of an agent's phone as one source reports it.

    Sources name calls differently (HEP and AMI by the SIP Call-ID; a dialog-state source by a
    key of its own), so the same real call may be here once per naming: `sources` are those
    that reported it under this name (`source` the first), and ambiguity is counted per
    source. `first`/`last` order the reports (a counter across the phone's calls); `heard_at`
    is the bridge's time of the last one.
    """

    call_id: str
    remote: str | None
    state: CallState
    source: str = ""
    first: int = 0
    last: int = 0
    heard_at: float = 0.0
    answered: bool = False
    sources: set[str] = field(default_factory=set)


@dataclass(slots=True)
class PhoneCalls:
    """The calls of one phone, kept so that a session can be bound to exactly one live call."""

    calls: dict[str, PhoneCall] = field(default_factory=dict)
    recent: OrderedDict[str, PhoneCall] = field(default_factory=OrderedDict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def update(
        self,
        call_id: str,
        remote: str | None,
        state: CallState | None,
        source: str = "",
        now: float = 0.0,
    ) -> None:
        """Record what a source said about a call at `now`; ended calls move to `recent`."""
        seq = next(self._seq)
        call = self.calls.get(call_id)
        if call is None:
            if state is None or state not in LIVE_CALL:
                old = self.recent.get(call_id)
                if old is not None:
                    old.last = seq
                    if remote and not old.remote:
                        old.remote = remote
                return
            call = self.calls[call_id] = PhoneCall(call_id, remote, state, source, seq, seq, now)
            self._bound(now)
        call.last = seq
        call.heard_at = now
        call.sources.add(source)
        if remote and not call.remote:
            call.remote = remote
        if state is not None:
            call.state = state
            call.answered = call.answered or state in ANSWERED
            if state not in LIVE_CALL:
                self._retire(call)

    def _retire(self, call: PhoneCall) -> None:
        self.calls.pop(call.call_id, None)
        self.recent[call.call_id] = call
        self.recent.move_to_end(call.call_id)
        while len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)

    def _bound(self, now: float) -> None:
        """Forget calls long past any use, and the quietest ones past `LIVE_CALLS`."""
        for call in [c for c in self.calls.values() if _forgotten(c, now)]:
            self._retire(call)
        while len(self.calls) > LIVE_CALLS:
            self._retire(min(self.calls.values(), key=lambda c: c.last))

    def stale_reason(self, call: PhoneCall, now: float) -> str | None:
        """Why a call a source still calls live is not (`superseded`, `no_final_response`)."""
        if call.call_id not in self.calls:
            return None
        # A newer call that has ended since still counts: its end does not revive a call
        # that went quiet when it began.
        for newer in itertools.chain(self.calls.values(), self.recent.values()):
            if (
                newer.first > call.last
                and not newer.sources.isdisjoint(call.sources)
                and numbers_match(newer.remote, call.remote)
                and (newer.answered or not call.answered)
            ):
                return SUPERSEDED
        if not call.answered and now - call.heard_at > EARLY_LIMIT:
            return NO_FINAL_RESPONSE
        return None

    def matching(self, number: str, now: float, *, unnamed: bool = True) -> list[PhoneCall]:
        """Live calls whose remote party is this number, stale ones left out, oldest first.

        A call whose remote party its sources cannot tell (Asterisk's dialog-info names the
        caller only in an early NOTIFY, and not always there) matches too (with `unnamed`)
        while it is the only live call of those sources on the phone: not another number, and
        not one of several.
        """
        return [
            c
            for c in self.calls.values()
            if (numbers_match(c.remote, number) or (unnamed and self.alone_unnamed(c)))
            and self.stale_reason(c, now) is None
        ]

    def alone_unnamed(self, call: PhoneCall) -> bool:
        """A live call without a remote number that its sources report as the phone's only one."""
        if call.remote or call.call_id not in self.calls:
            return False
        return all(
            other is call or other.sources.isdisjoint(call.sources) for other in self.calls.values()
        )

    def stale(self, number: str, now: float) -> list[tuple[PhoneCall, str]]:
        """Calls with this number a source still calls live, with why they are not."""
        out = []
        for c in self.calls.values():
            if numbers_match(c.remote, number):
                reason = self.stale_reason(c, now)
                if reason is not None:
                    out.append((c, reason))
        return out

    def known(self, call_id: str) -> PhoneCall | None:
        """A call live now or ended lately."""
        return self.calls.get(call_id) or self.recent.get(call_id)


def _forgotten(call: PhoneCall, now: float) -> bool:
    limit = IDLE_LIMIT if call.answered else EARLY_LIMIT * 10
    return now - call.heard_at > limit


@dataclass(frozen=True, slots=True)
class BindingChange:
    """A session's binding as correlation now sees it, and why."""

    session_id: str
    binding: Binding
    call_id: str | None
    reason: str = ONLY_LIVE_CALL
    candidates: tuple[CallCandidate, ...] = ()
    previous: str | None = None  # the call the session held before, when it rebinds
    skipped: tuple[tuple[str, str], ...] = ()  # (call id, stale reason) not bound to


def candidates_of(calls: list[PhoneCall]) -> tuple[CallCandidate, ...]:
    """The calls a session could be bound to, as the session view lists them."""
    return tuple(CallCandidate(c.call_id, c.state, c.source) for c in calls)


def bind_candidates(session: Session, calls: PhoneCalls, now: float) -> BindingChange | None:
    """How an open session not bound by the desktop should be bound now, if that changed.

    Each source may report the call under its own name: the number must match exactly one live
    call per source that reports any; several sources each with one is still one call.
    """
    if session.status is SessionStatus.ENDED or session.call.binding is Binding.CALL_ID:
        return None
    number = session.customer.number
    # A call without a number is taken only for a session whose desktop (or evidence) says
    # the agent is on a call with the customer: never a call to someone else the agent makes.
    found = calls.matching(number, now, unnamed=session.call.state is not CallState.NONE)
    skipped = tuple((c.call_id, reason) for c, reason in calls.stale(number, now))
    if session.call.binding is Binding.PHONE_AND_NUMBER:
        return _rebind(session, calls, found, skipped, now)
    if found and _one_per_source(found):
        call = next((c for c in found if c.remote), found[0])
        reason = ONLY_LIVE_CALL if call.remote else ONLY_CALL_NUMBER_UNKNOWN
        return BindingChange(
            session.id, Binding.PHONE_AND_NUMBER, call.call_id, reason, skipped=skipped
        )
    if found:
        listed = candidates_of(found)
        if session.call.binding is Binding.AMBIGUOUS and listed == session.call.candidates:
            return None
        return BindingChange(
            session.id, Binding.AMBIGUOUS, None, SEVERAL_LIVE_CALLS, listed, skipped=skipped
        )
    if session.call.binding is Binding.NONE:
        return None
    return BindingChange(session.id, Binding.NONE, None, NO_LIVE_CALL, skipped=skipped)


def _rebind(
    session: Session,
    calls: PhoneCalls,
    found: list[PhoneCall],
    skipped: tuple[tuple[str, str], ...],
    now: float,
) -> BindingChange | None:
    """A session bound by phone and number: keep its call unless the evidence moved on."""
    held_id = session.call.sip_call_id
    held = calls.known(held_id) if held_id else None
    if held is None:
        return None
    reason = calls.stale_reason(held, now)
    if reason is None:
        if held.call_id in calls.calls:
            return None  # live: kept, whatever else rings
        # Ended. The customer calling the phone again afterwards is this session's call now,
        # as long as nothing was transferred on the old one.
        if session.status is not SessionStatus.ACTIVE:
            return None
        if session.transfer.state not in FOLLOWS_CUSTOMER:
            return None
        found = [c for c in found if c.first > held.last]
        reason = CALLED_AGAIN
    others = [c for c in found if c.call_id != held.call_id]
    if not others:
        return None  # nothing better to go to: keep what the session has
    if _one_per_source(others):
        return BindingChange(
            session.id,
            Binding.PHONE_AND_NUMBER,
            others[0].call_id,
            reason,
            previous=held.call_id,
            skipped=skipped,
        )
    return BindingChange(
        session.id,
        Binding.AMBIGUOUS,
        None,
        SEVERAL_LIVE_CALLS,
        candidates_of(others),
        previous=held.call_id,
        skipped=skipped,
    )


def _one_per_source(calls: list[PhoneCall]) -> bool:
    """No source reports two of these calls: they are one real call under several names."""
    seen: set[str] = set()
    for call in calls:
        if not seen.isdisjoint(call.sources):
            return False
        seen |= call.sources
    return True


def _same_call_elsewhere(
    sessions: list[Session], calls: PhoneCalls, call_id: str, now: float
) -> Session | None:
    """The one bound session this call is another source's name for, or None.

    The call must be its source's only live call with that number on the phone (live, or this
    one ended lately), and exactly one bound open session must have that customer number.
    """
    call = calls.known(call_id)
    if call is None:
        return None
    remote = call.remote
    if not remote and not calls.alone_unnamed(call):
        return None
    rivals = [
        c
        for c in (calls.matching(remote, now) if remote else [])
        if not c.sources.isdisjoint(call.sources) and c.call_id != call_id
    ]
    if rivals:
        return None
    bound = [
        s
        for s in sessions
        if s.call.binding in (Binding.CALL_ID, Binding.PHONE_AND_NUMBER)
        and (not remote or numbers_match(s.customer.number, remote))
    ]
    return bound[0] if len(bound) == 1 else None


def route(
    sessions: list[Session], calls: PhoneCalls, call_id: str | None, now: float = 0.0
) -> tuple[Session | None, list[BindingChange]]:
    """The one open session a call's evidence belongs to, and the bindings that change on the way.

    `sessions` are the open sessions of the phone's agent; `calls` already includes the event.
    """
    open_sessions = [s for s in sessions if s.status is not SessionStatus.ENDED]
    changes: list[BindingChange] = []
    for session in open_sessions:
        change = bind_candidates(session, calls, now)
        if change is not None:
            changes.append(change)
    by_call: dict[str, list[str]] = {}
    for change in changes:
        if change.call_id is not None:
            by_call.setdefault(change.call_id, []).append(change.session_id)
    held = {
        s.call.sip_call_id: s.id
        for s in open_sessions
        if s.call.sip_call_id is not None and s.call.binding is not Binding.AMBIGUOUS
    }
    for cid, ids in by_call.items():
        holder = held.get(cid)
        if holder is not None and holder not in ids:
            ids.append(holder)  # a session that keeps this call already has it
    contested = {
        sid
        for ids in by_call.values()
        if len(ids) > 1
        for sid in ids
        if sid in {c.session_id for c in changes}
    }
    if contested:
        # Two open sessions of the same agent with the same customer number: not ours to pick.
        by_id = {c.session_id: c for c in changes}
        changes = [c for c in changes if c.session_id not in contested]
        for sid in sorted(contested):
            old = by_id[sid]
            session = next(s for s in open_sessions if s.id == sid)
            if session.call.binding is Binding.AMBIGUOUS and not session.call.candidates:
                continue  # already ambiguous for this reason
            changes.append(
                BindingChange(
                    sid, Binding.AMBIGUOUS, None, SESSIONS_SHARE_CALL, previous=old.previous
                )
            )
    rebound = {c.session_id for c in changes}
    if call_id is not None:
        bound = [
            s
            for s in open_sessions
            if s.call.sip_call_id == call_id
            and s.id not in rebound
            and s.call.binding is not Binding.AMBIGUOUS
        ]
        if len(bound) == 1:
            return bound[0], changes
    claims = [c for c in changes if c.call_id is not None and c.call_id == call_id]
    target = None
    if claims:
        target = next(s for s in open_sessions if s.id == claims[0].session_id)
    elif call_id is not None:
        target = _same_call_elsewhere(
            [s for s in open_sessions if s.id not in rebound], calls, call_id, now
        )
    return target, changes
