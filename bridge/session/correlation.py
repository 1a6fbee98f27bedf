"""Which session a phone event belongs to: exact matches only, ambiguity reported, never guessed.

docs/api.md, "Binding a session to the phone call": by `call.sip_call_id` when the desktop
gave it; otherwise by the agent's phone plus the customer's number on the one call of that phone
that is connected (or ringing) with that number.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from bridge.model import Binding, CallState, Session, SessionStatus
from bridge.uris import numbers_match

LIVE_CALL = frozenset({CallState.RINGING, CallState.CONNECTED, CallState.ON_HOLD})
RECENT_CALLS = 64  # ended calls remembered per phone, for evidence that comes after the end


@dataclass(slots=True)
class PhoneCall:
    """A call of an agent's phone as one source reports it.

    Sources name calls differently (HEP and AMI by the SIP Call-ID; a dialog-state source by a
    key of its own), so the same real call may be here once per source: `source` keeps them
    apart, and ambiguity is counted per source.
    """

    call_id: str
    remote: str | None
    state: CallState
    source: str = ""


@dataclass(slots=True)
class PhoneCalls:
    """The live calls of one phone, kept so that a session can be bound to exactly one."""

    calls: dict[str, PhoneCall] = field(default_factory=dict)
    recent: OrderedDict[str, PhoneCall] = field(default_factory=OrderedDict)

    def update(
        self, call_id: str, remote: str | None, state: CallState | None, source: str = ""
    ) -> None:
        """Record what a source said about a call; ended calls move to `recent`."""
        call = self.calls.get(call_id)
        if call is None:
            if state is None or state not in LIVE_CALL:
                if call_id in self.recent and remote and not self.recent[call_id].remote:
                    self.recent[call_id].remote = remote
                return
            call = self.calls[call_id] = PhoneCall(call_id, remote, state, source)
        if remote and not call.remote:
            call.remote = remote
        if state is not None:
            call.state = state
            if state not in LIVE_CALL:
                del self.calls[call_id]
                self.recent[call_id] = call
                while len(self.recent) > RECENT_CALLS:
                    self.recent.popitem(last=False)

    def matching(self, number: str) -> list[PhoneCall]:
        """Live calls whose remote party is this number."""
        return [c for c in self.calls.values() if numbers_match(c.remote, number)]

    def known(self, call_id: str) -> PhoneCall | None:
        """A call live now or ended lately."""
        return self.calls.get(call_id) or self.recent.get(call_id)


@dataclass(frozen=True, slots=True)
class BindingChange:
    """A session's binding as correlation now sees it."""

    session_id: str
    binding: Binding
    call_id: str | None


def bind_candidates(session: Session, calls: PhoneCalls) -> BindingChange | None:
    """Try to bind an unbound session to one live call of its agent's phone.

    Each source may report the call under its own name: the number must match exactly one live
    call per source that reports any; several sources each with one is still one call.
    """
    if session.status is SessionStatus.ENDED or session.call.binding is Binding.CALL_ID:
        return None
    if session.call.binding is Binding.PHONE_AND_NUMBER:
        return None
    found = calls.matching(session.customer.number)
    by_source: dict[str, list[PhoneCall]] = {}
    for call in found:
        by_source.setdefault(call.source, []).append(call)
    if found and all(len(same) == 1 for same in by_source.values()):
        return BindingChange(session.id, Binding.PHONE_AND_NUMBER, found[0].call_id)
    binding = Binding.AMBIGUOUS if found else Binding.NONE
    if binding is session.call.binding:
        return None
    return BindingChange(session.id, binding, None)


def _same_call_elsewhere(
    sessions: list[Session], calls: PhoneCalls, call_id: str
) -> Session | None:
    """The one bound session this call is another source's name for, or None.

    The call must be its source's only call with that number on the phone (live, or this one
    ended lately), and exactly one bound open session must have that customer number.
    """
    call = calls.known(call_id)
    if call is None or not call.remote:
        return None
    rivals = [
        c for c in calls.matching(call.remote) if c.source == call.source and c.call_id != call_id
    ]
    if rivals:
        return None
    bound = [
        s
        for s in sessions
        if s.call.binding in (Binding.CALL_ID, Binding.PHONE_AND_NUMBER)
        and numbers_match(s.customer.number, call.remote)
    ]
    return bound[0] if len(bound) == 1 else None


def route(
    sessions: list[Session], calls: PhoneCalls, call_id: str | None
) -> tuple[Session | None, list[BindingChange]]:
    """The one open session a call's evidence belongs to, and the bindings that change on the way.

    `sessions` are the open sessions of the phone's agent; `calls` already includes the event.
    """
    open_sessions = [s for s in sessions if s.status is not SessionStatus.ENDED]
    if call_id is not None:
        bound = [s for s in open_sessions if s.call.sip_call_id == call_id]
        if len(bound) == 1:
            return bound[0], []
    changes: list[BindingChange] = []
    for session in open_sessions:
        change = bind_candidates(session, calls)
        if change is not None:
            changes.append(change)
    by_call: dict[str, list[str]] = {}
    for change in changes:
        if change.call_id is not None:
            by_call.setdefault(change.call_id, []).append(change.session_id)
    contested = {sid for ids in by_call.values() if len(ids) > 1 for sid in ids}
    if contested:
        # Two open sessions of the same agent with the same customer number: not ours to pick.
        changes = [c for c in changes if c.session_id not in contested]
        changes += [BindingChange(sid, Binding.AMBIGUOUS, None) for sid in sorted(contested)]
    claims = [c for c in changes if c.call_id is not None and c.call_id == call_id]
    target = None
    if claims:
        target = next(s for s in open_sessions if s.id == claims[0].session_id)
    elif call_id is not None:
        settled = {c.session_id for c in changes}
        target = _same_call_elsewhere(
            [s for s in open_sessions if s.id not in settled], calls, call_id
        )
    return target, changes
