"""The binding rules replayed on scripted call reports: which call a session holds, and why.

Each script is what the sources reported about the agent's phone, with the bridge's own time;
sessions open at chosen moments. The sessions are carried through `route` and `apply_binding`
exactly as the service does, so each test reads like the audit trail a desktop would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bridge.evidence import CallStateChanged, PhoneEvidence
from bridge.model import (
    Binding,
    Call,
    CallState,
    Customer,
    Session,
    Transfer,
    TransferState,
)
from bridge.session.correlation import (
    EARLY_LIMIT,
    LIVE_CALLS,
    BindingChange,
    PhoneCalls,
    route,
)
from bridge.session.machine import apply_binding
from bridge.session.phone import apply_evidence

NOW = "2026-11-25T10:00:00.000Z"
CUSTOMER = "+34900000001"
RING, UP, HOLD, END = CallState.RINGING, CallState.CONNECTED, CallState.ON_HOLD, CallState.ENDED


@dataclass
class Desk:
    """One agent's open sessions, the calls of the agent's phone, and the binding trail."""

    calls: PhoneCalls = field(default_factory=PhoneCalls)
    sessions: dict[str, Session] = field(default_factory=dict)
    trail: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    routed: list[tuple[str, str | None]] = field(default_factory=list)  # (call, session)

    def report(
        self,
        t: float,
        call_id: str,
        state: CallState | None,
        remote: str | None = CUSTOMER,
        source: str = "hep",
    ) -> None:
        """A source reports on a call at bridge time `t`; bindings move as the service does."""
        self.calls.update(call_id, remote, state, source, t)
        target, changes = route(list(self.sessions.values()), self.calls, call_id, t)
        self._apply(changes, call_id if state is not None else None)
        self.routed.append((call_id, target.id if target else None))
        if target is not None and state is not None:
            evidence = PhoneEvidence(source, NOW, CallStateChanged(state))
            o = apply_evidence(self.sessions[target.id], evidence, now=NOW)
            self.sessions[target.id] = o.session

    def open(self, t: float, sid: str, number: str = CUSTOMER) -> None:
        """The desktop opens a session without a Call-ID."""
        s = Session("acme", sid, "a-7", Customer(number), NOW, call=Call(UP))
        self.sessions[sid] = s
        _, changes = route(list(self.sessions.values()), self.calls, None, t)
        self._apply([c for c in changes if c.session_id == sid])

    def _apply(self, changes: list[BindingChange], reported: str | None = None) -> None:
        for change in changes:
            s = self.sessions[change.session_id]
            known = self.calls.calls.get(change.call_id) if change.call_id else None
            if change.call_id == reported and s.call.state is not CallState.ENDED:
                known = None  # the report itself sets the state (as the service does)
            o = apply_binding(
                s,
                change.binding,
                change.call_id,
                known.state if known else None,
                now=NOW,
                reason=change.reason,
                candidates=change.candidates,
                previous=change.previous,
                skipped=change.skipped,
            )
            self.sessions[s.id] = o.session
            self.trail += [(s.id, e.detail) for e in o.audit]

    def held(self, sid: str) -> tuple[Binding, str | None]:
        call = self.sessions[sid].call
        return call.binding, call.sip_call_id


def test_a_lost_bye_then_the_customer_calls_again_session_opened_before() -> None:
    """The BYE of call 1 was never captured: it stays 'connected'. The session binds to it at
    open (the only call there is), keeps it while call 2 only rings (call waiting is real),
    and moves to call 2 once answered: call 1 has been silent since call 2 began."""
    d = Desk()
    d.report(0, "c-1", RING)
    d.report(1, "c-1", UP)
    # ... the customer hangs up; the BYE is lost
    d.open(60, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    d.report(70, "c-2", RING)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    d.report(72, "c-2", UP)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    assert d.sessions["s-1"].call.state is UP
    assert d.trail[-1] == (
        "s-1",
        {
            "binding": "phone_and_number",
            "sip_call_id": "c-2",
            "reason": "superseded",
            "previous_call_id": "c-1",
            "skipped": [{"sip_call_id": "c-1", "reason": "superseded"}],
        },
    )
    d.report(80, "c-2", HOLD)  # the transfer's evidence now reaches the session
    assert d.routed[-1] == ("c-2", "s-1")


def test_a_lost_bye_then_a_session_opened_during_the_second_call() -> None:
    d = Desk()
    d.report(0, "c-1", UP)
    d.report(100, "c-2", RING)
    d.report(102, "c-2", UP)
    d.open(103, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    assert d.trail == [
        (
            "s-1",
            {
                "binding": "phone_and_number",
                "sip_call_id": "c-2",
                "reason": "only_live_call",
                "skipped": [{"sip_call_id": "c-1", "reason": "superseded"}],
            },
        )
    ]


def test_opened_while_the_second_call_rings_ambiguous_then_bound_on_the_answer() -> None:
    d = Desk()
    d.report(0, "c-1", UP)
    d.report(100, "c-2", RING)
    d.open(101, "s-1")
    call = d.sessions["s-1"].call
    assert call.binding is Binding.AMBIGUOUS
    assert [(c.sip_call_id, c.state) for c in call.candidates] == [("c-1", UP), ("c-2", RING)]
    d.report(103, "c-2", UP)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    assert d.sessions["s-1"].call.candidates == ()


def test_a_lost_cancel_is_superseded_by_the_callback_at_once() -> None:
    """The customer gave up while it rang and the CANCEL was lost: an early leg forever. The
    next call from the customer supersedes it at its INVITE."""
    d = Desk()
    d.report(0, "c-1", RING)
    d.open(5, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    d.report(10, "c-2", RING)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    assert d.trail[-1][1]["reason"] == "superseded"


def test_an_early_call_quiet_past_64_t1_is_not_live() -> None:
    late, soon = Desk(), Desk()
    for d in (late, soon):
        d.report(0, "c-1", RING)
    late.open(EARLY_LIMIT + 1, "s-1")
    assert late.held("s-1") == (Binding.NONE, None)
    soon.open(EARLY_LIMIT - 1, "s-1")  # within the limit it binds
    assert soon.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")


def test_a_long_ringing_call_that_is_answered_binds_then() -> None:
    d = Desk()
    d.report(0, "c-1", RING)
    d.open(40, "s-1")
    assert d.held("s-1") == (Binding.NONE, None)
    d.report(45, "c-1", UP)  # a final response: live again
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    assert d.routed[-1] == ("c-1", "s-1")


def test_a_session_on_a_stale_early_call_moves_to_the_real_one() -> None:
    """Bound to an early leg that then expired; the customer's real call rebinds it."""
    d = Desk()
    d.report(0, "c-1", RING)
    d.open(1, "s-1")
    d.report(20, "c-x", RING, remote="+34911111111")  # another customer: no change
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    d.report(50, "c-2", UP)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")


def test_call_waiting_is_ambiguous_with_both_candidates_until_one_ends() -> None:
    """Two real calls with the customer's number: the first is held after the second began."""
    d = Desk()
    d.report(0, "c-a", UP)
    d.report(10, "c-b", RING)
    d.report(12, "c-a", HOLD)
    d.report(13, "c-b", UP)
    d.open(14, "s-1")
    call = d.sessions["s-1"].call
    assert call.binding is Binding.AMBIGUOUS and call.sip_call_id is None
    assert [c.sip_call_id for c in call.candidates] == ["c-a", "c-b"]
    assert d.trail[-1][1]["reason"] == "several_live_calls"
    d.report(15, "c-b", HOLD)  # candidates' states are kept current
    assert [c.state for c in d.sessions["s-1"].call.candidates] == [HOLD, HOLD]
    d.report(20, "c-a", END)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-b")


def test_a_session_bound_before_call_waiting_keeps_its_call() -> None:
    d = Desk()
    d.report(0, "c-a", UP)
    d.open(1, "s-1")
    d.report(10, "c-b", RING)
    d.report(12, "c-a", HOLD)
    d.report(13, "c-b", UP)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-a")


def test_the_customer_calls_again_after_a_seen_end() -> None:
    """The call ended (seen) with no transfer made; the customer calls back while the session
    is still open: the session follows the customer to the new call."""
    d = Desk()
    d.report(0, "c-1", UP)
    d.open(1, "s-1")
    d.report(5, "c-1", END)
    assert d.sessions["s-1"].call.state is END
    d.report(30, "c-2", RING)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    assert d.sessions["s-1"].call.state is RING
    assert d.trail[-1][1]["reason"] == "called_again"


def test_a_transferred_session_does_not_follow_the_customer() -> None:
    d = Desk()
    d.report(0, "c-1", UP)
    d.open(1, "s-1")
    s = d.sessions["s-1"]
    d.sessions["s-1"] = replace(s, transfer=Transfer(state=TransferState.TRANSFERRED))
    d.report(5, "c-1", END)
    d.report(30, "c-2", RING)
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")


def test_a_leftover_from_garbage_does_not_capture_the_session() -> None:
    """Garbage INVITEs leave early legs (also with the customer's number); none is live past
    64*T1 and the table of one phone stays bounded."""
    d = Desk()
    for n in range(LIVE_CALLS * 3):
        d.report(n * 0.01, f"junk-{n}", RING, remote=CUSTOMER if n % 2 else f"+3491{n:07d}")
    assert len(d.calls.calls) <= LIVE_CALLS
    d.report(100, "c-1", RING)
    d.open(101, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")


def test_two_sources_each_with_one_live_call_is_one_call_despite_a_phantom() -> None:
    """HEP lost the BYE of call 1, the dialog-state source saw it end: after the callback each
    source has one live call, so the session binds."""
    d = Desk()
    d.report(0, "c-1", UP)
    d.report(0.1, "dialog:1001:1", UP, source="blf")
    d.report(30, "dialog:1001:1", END, source="blf")
    d.report(60, "c-2", RING)
    d.report(60.1, "dialog:1001:2", RING, source="blf")
    d.report(62, "c-2", UP)
    d.report(62.1, "dialog:1001:2", UP, source="blf")
    d.open(63, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-2")
    d.report(64, "dialog:1001:2", HOLD, source="blf")  # another source's name reaches it
    assert d.routed[-1] == ("dialog:1001:2", "s-1")


def test_two_sessions_for_one_call_the_holder_keeps_it() -> None:
    d = Desk()
    d.report(0, "c-1", UP)
    d.open(1, "s-1")
    d.open(2, "s-2")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "c-1")
    assert d.held("s-2") == (Binding.AMBIGUOUS, None)
    assert d.trail[-1] == (
        "s-2",
        {"binding": "ambiguous", "sip_call_id": None, "reason": "sessions_share_call"},
    )
    d.report(3, "c-1", HOLD)
    assert d.routed[-1] == ("c-1", "s-1")


def test_two_sources_sharing_call_ids_still_see_two_calls() -> None:
    """HEP and AMI both name calls by the SIP Call-ID, so they share entries; call waiting
    reported by both (in any order) is still two calls for each of them."""
    d = Desk()
    d.report(0, "c-a", UP, source="ami")
    d.report(0.1, "c-a", UP, source="hep")
    d.report(10, "c-b", RING, source="hep")
    d.report(10.1, "c-b", RING, source="ami")
    d.report(12, "c-a", HOLD, source="ami")
    d.report(13, "c-b", UP, source="hep")
    d.open(14, "s-1")
    call = d.sessions["s-1"].call
    assert call.binding is Binding.AMBIGUOUS
    assert [c.sip_call_id for c in call.candidates] == ["c-a", "c-b"]


def test_a_call_whose_number_its_source_cannot_tell_binds_only_while_alone() -> None:
    """Asterisk's dialog-info names the caller only in an early NOTIFY, and sometimes not even
    there: such a call binds while it is its source's only live call on the phone, never
    when there are two (which one would it be?)."""
    d = Desk()
    d.report(0, "dialog:1", RING, remote=None, source="blf")
    d.report(1, "dialog:1", UP, remote=None, source="blf")
    d.open(2, "s-1")
    assert d.held("s-1") == (Binding.PHONE_AND_NUMBER, "dialog:1")
    assert d.trail[-1][1]["reason"] == "only_call_number_unknown"
    d.report(3, "dialog:1", HOLD, remote=None, source="blf")
    assert d.routed[-1] == ("dialog:1", "s-1")

    two = Desk()
    two.report(0, "dialog:1", UP, remote=None, source="blf")
    two.report(1, "dialog:2", UP, remote=None, source="blf")
    two.open(2, "s-1")
    assert two.held("s-1") == (Binding.NONE, None)

    idle = Desk()  # nor for a session that does not say the agent is on a call
    idle.report(0, "dialog:1", UP, remote=None, source="blf")
    idle.sessions["s-1"] = Session("acme", "s-1", "a-7", Customer(CUSTOMER), NOW)
    idle.report(1, "dialog:1", HOLD, remote=None, source="blf")
    assert idle.held("s-1") == (Binding.NONE, None)

    other = Desk()  # a call with another known number is not taken for the customer's
    other.report(0, "c-9", UP, remote="+34911111111")
    other.open(1, "s-1")
    assert other.held("s-1") == (Binding.NONE, None)


def test_a_phantom_stays_superseded_after_the_newer_call_ends() -> None:
    d = Desk()
    d.report(0, "c-1", UP)  # its BYE is lost
    d.report(60, "c-2", RING)
    d.report(61, "c-2", UP)
    d.report(120, "c-2", END)  # seen
    d.open(200, "s-1")
    assert d.held("s-1") == (Binding.NONE, None)
