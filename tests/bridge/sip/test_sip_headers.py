"""Single-header decoders: CSeq, Via, Replaces, Event, Subscription-State, Refer-Sub."""

from __future__ import annotations

import pytest

from bridge.sip import (
    CSeq,
    EventHeader,
    ReplacesParams,
    SipParseError,
    SubscriptionState,
    canonical_name,
    parse_cseq,
    parse_event,
    parse_refer_sub,
    parse_replaces,
    parse_subscription_state,
    parse_via,
)


def test_cseq() -> None:
    assert parse_cseq(" 4711   INVITE \r") == CSeq(4711, "INVITE")
    assert parse_cseq("0 X-CUSTOM.1") == CSeq(0, "X-CUSTOM.1")


@pytest.mark.parametrize(
    "value", ["", "1", "INVITE 1", "1 2 3", "-1 BYE", "2147483648 BYE", "1 B@E"]
)
def test_bad_cseq(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_cseq(value)


def test_via() -> None:
    via = parse_via("SIP/2.0/udp 192.168.50.11:5060;rport=5060;received=10.0.0.9;branch=z9hG4bKx")
    assert (via.transport, via.host, via.port) == ("UDP", "192.168.50.11", 5060)
    assert via.branch == "z9hG4bKx"
    assert via.param("received") == "10.0.0.9"
    spaced = parse_via("SIP / 2.0 / TCP [2001:db8::2];branch=z9hG4bKy")
    assert (spaced.transport, spaced.host, spaced.port, spaced.branch) == (
        "TCP",
        "[2001:db8::2]",
        None,
        "z9hG4bKy",
    )


@pytest.mark.parametrize("value", ["", "SIP/2.0/UDP", "SIP/2.0 h", "SIP//UDP h", "SIP/2.0/UDP h:x"])
def test_bad_via(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(value)


def test_replaces_header() -> None:
    value = "98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only"
    assert parse_replaces(value) == ReplacesParams(
        "98732@sip.example.com", "ff87ff", "r33th4x0r", True
    )
    assert not parse_replaces("a@b;to-tag=1;from-tag=2").early_only


@pytest.mark.parametrize(
    "value",
    ["", ";to-tag=1;from-tag=2", "a@b;to-tag=1", "a@b;from-tag=2", "a b;to-tag=1;from-tag=2"],
)
def test_bad_replaces(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_replaces(value)


def test_event() -> None:
    assert parse_event("refer") == EventHeader("refer")
    event = parse_event("Refer;id=93809824;x=y")
    assert (event.package, event.id) == ("refer", "93809824")
    assert event.params == (("id", "93809824"), ("x", "y"))
    assert parse_event("presence.winfo").package == "presence.winfo"


@pytest.mark.parametrize("value", ["", ";id=1", "re fer", "refer;=1"])
def test_bad_event(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_event(value)


def test_subscription_state() -> None:
    assert parse_subscription_state("active;expires=180") == SubscriptionState("active", None, 180)
    done = parse_subscription_state("Terminated;reason=NoResource")
    assert done == SubscriptionState("terminated", "noresource")
    assert done.is_terminated
    retry = parse_subscription_state("terminated;reason=probation;retry-after=30")
    assert retry.retry_after == 30
    assert not parse_subscription_state("pending").is_terminated


@pytest.mark.parametrize("value", ["", "active;expires=soon", "active;retry-after=-1", "a b"])
def test_bad_subscription_state(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_subscription_state(value)


def test_refer_sub() -> None:
    assert parse_refer_sub("false") is False
    assert parse_refer_sub(" TRUE ;x=1") is True
    with pytest.raises(SipParseError):
        parse_refer_sub("maybe")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("i", "call-id"),
        ("F", "from"),
        ("t", "to"),
        ("v", "via"),
        ("m", "contact"),
        ("l", "content-length"),
        ("c", "content-type"),
        ("e", "content-encoding"),
        ("k", "supported"),
        ("s", "subject"),
        ("r", "refer-to"),
        ("b", "referred-by"),
        ("o", "event"),
        ("u", "allow-events"),
        ("x", "session-expires"),
        ("Call-ID", "call-id"),
        ("q", "q"),
    ],
)
def test_canonical_names(name: str, key: str) -> None:
    assert canonical_name(name) == key
