"""Binding phone calls to sessions: exact or not at all."""

from __future__ import annotations

import pytest

from bridge.model import Binding, Call, CallState, Customer, Session
from bridge.session.correlation import PhoneCalls, route
from bridge.uris import numbers_match, phone_key

NOW = "2026-11-25T10:00:00.000Z"


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("sip:1001@pbx.example", "1001@pbx.example"),
        ("<sip:1001@PBX.example:5060;transport=udp>", "1001@pbx.example"),
        ("sips:1001@pbx.example?X=1", "1001@pbx.example"),
        ("sip:1001@[2001:db8::1]:5060", "1001@[2001:db8::1]"),
        ("sip:pbx.example", "pbx.example"),
    ],
)
def test_phone_key(uri: str, key: str) -> None:
    assert phone_key(uri) == key


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("+34900000001", "+34 900 000 001", True),
        ("+34900000001", "900000001", True),
        ("+34900000001", "0034900000001", True),
        ("+34900000001", "+34900000002", False),
        ("1002", "+34900001002", False),  # too short to match a suffix
        ("", "1", False),
        (None, "1", False),
        ("anonymous", "Anonymous", True),
    ],
)
def test_numbers_match(a: str | None, b: str, same: bool) -> None:
    assert numbers_match(a, b) is same


def session(sid: str, number: str = "+34900000001", call_id: str | None = None) -> Session:
    binding = Binding.CALL_ID if call_id else Binding.NONE
    return Session(
        "acme",
        sid,
        "a-7",
        Customer(number),
        NOW,
        call=Call(state=CallState.CONNECTED, sip_call_id=call_id, binding=binding),
    )


def test_call_id_given_by_the_desktop_wins() -> None:
    calls = PhoneCalls()
    calls.update("c-1", "+34900000001", CallState.CONNECTED)
    s1, s2 = session("s-1", call_id="c-1"), session("s-2")
    target, _ = route([s1, s2], calls, "c-1")
    assert target is s1


def test_one_call_with_the_customer_number_binds() -> None:
    calls = PhoneCalls()
    calls.update("c-1", "900000001", CallState.CONNECTED)
    target, changes = route([session("s-1")], calls, "c-1")
    assert target is not None and target.id == "s-1"
    assert [(c.binding, c.call_id) for c in changes] == [(Binding.PHONE_AND_NUMBER, "c-1")]


def test_two_live_calls_with_the_same_number_are_ambiguous() -> None:
    calls = PhoneCalls()
    calls.update("c-1", "+34900000001", CallState.CONNECTED)
    calls.update("c-2", "+34900000001", CallState.RINGING)
    calls.update("c-1", None, CallState.ON_HOLD)  # call waiting: the first call is held
    calls.update("c-2", None, CallState.CONNECTED)
    target, changes = route([session("s-1")], calls, "c-2")
    assert target is None
    assert [c.binding for c in changes] == [Binding.AMBIGUOUS]


def test_two_sessions_for_the_same_call_are_ambiguous() -> None:
    calls = PhoneCalls()
    calls.update("c-1", "+34900000001", CallState.CONNECTED)
    target, changes = route([session("s-1"), session("s-2")], calls, "c-1")
    assert target is None
    assert sorted((c.session_id, c.binding) for c in changes) == [
        ("s-1", Binding.AMBIGUOUS),
        ("s-2", Binding.AMBIGUOUS),
    ]


def test_a_call_with_another_number_reaches_no_session() -> None:
    calls = PhoneCalls()
    calls.update("c-9", "+34911111111", CallState.CONNECTED)
    target, changes = route([session("s-1")], calls, "c-9")
    assert target is None
    assert changes == []


def test_ended_calls_are_forgotten_so_memory_stays_bounded() -> None:
    calls = PhoneCalls()
    calls.update("c-1", "+34900000001", CallState.CONNECTED)
    calls.update("c-1", None, CallState.ENDED)
    assert calls.calls == {}
    calls.update("c-2", "+34900000001", CallState.ENDED)  # never seen live: not kept
    assert calls.calls == {}


class TestSeveralSources:
    """HEP/AMI name a call by its SIP Call-ID, a dialog-state source by a key of its own: the
    same real call is then reported twice, once per source, and must not look ambiguous."""

    def session(self, sid: str = "s-1", number: str = "2000") -> Session:
        return Session("acme", sid, "a-7", Customer(number), NOW, call=Call(CallState.CONNECTED))

    def bound(self, sid: str = "s-1", call_id: str = "sip-1", number: str = "2000") -> Session:
        call = Call(CallState.CONNECTED, sip_call_id=call_id, binding=Binding.PHONE_AND_NUMBER)
        return Session("acme", sid, "a-7", Customer(number), NOW, call=call)

    def test_one_call_per_source_binds(self) -> None:
        calls = PhoneCalls()
        calls.update("dialog:1001:1", "2000", CallState.CONNECTED, "blf")
        calls.update("sip-1", "2000", CallState.CONNECTED, "hep")
        target, changes = route([self.session()], calls, "sip-1")
        assert [(c.binding, c.call_id) for c in changes] == [
            (Binding.PHONE_AND_NUMBER, "dialog:1001:1")
        ]
        assert target is None  # bound to the first name; this event is routed on the next call

    def test_two_calls_from_one_source_are_ambiguous(self) -> None:
        calls = PhoneCalls()
        calls.update("sip-1", "2000", CallState.CONNECTED, "hep")
        calls.update("sip-2", "2000", CallState.RINGING, "hep")
        calls.update("dialog:1001:1", "2000", CallState.CONNECTED, "blf")
        _, changes = route([self.session()], calls, "sip-2")
        assert [c.binding for c in changes] == [Binding.AMBIGUOUS]

    def test_another_sources_name_for_the_bound_call_reaches_the_session(self) -> None:
        calls = PhoneCalls()
        calls.update("sip-1", "2000", CallState.CONNECTED, "hep")
        calls.update("dialog:1001:1", "2000", CallState.CONNECTED, "blf")
        session = self.bound()
        assert route([session], calls, "dialog:1001:1") == (session, [])
        # ... also once that source has seen the call end (evidence may follow the end)
        calls.update("dialog:1001:1", None, CallState.ENDED, "blf")
        assert route([session], calls, "dialog:1001:1") == (session, [])

    def test_not_when_the_source_has_two_calls_with_that_number(self) -> None:
        calls = PhoneCalls()
        calls.update("sip-1", "2000", CallState.CONNECTED, "hep")
        calls.update("dialog:1001:1", "2000", CallState.CONNECTED, "blf")
        calls.update("dialog:1001:2", "2000", CallState.RINGING, "blf")
        assert route([self.bound()], calls, "dialog:1001:1") == (None, [])

    def test_not_when_two_bound_sessions_have_that_number(self) -> None:
        calls = PhoneCalls()
        calls.update("dialog:1001:1", "2000", CallState.CONNECTED, "blf")
        sessions = [self.bound("s-1", "sip-1"), self.bound("s-2", "sip-2")]
        assert route(sessions, calls, "dialog:1001:1") == (None, [])

    def test_a_call_of_another_customer_is_not_taken(self) -> None:
        calls = PhoneCalls()
        calls.update("dialog:1001:1", "2999", CallState.CONNECTED, "blf")
        assert route([self.bound()], calls, "dialog:1001:1") == (None, [])

    def test_recent_calls_are_bounded(self) -> None:
        calls = PhoneCalls()
        for n in range(500):
            calls.update(f"c-{n}", "2000", CallState.CONNECTED, "hep")
            calls.update(f"c-{n}", None, CallState.ENDED, "hep")
        assert calls.calls == {} and len(calls.recent) == 64
