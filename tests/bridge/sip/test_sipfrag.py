"""REFER, 202, NOTIFY with message/sipfrag, INVITE with Replaces: the transfer evidence."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.sip import ReplacesParams, SipFrag, SipParseError, parse_message, parse_sipfrag

Wire = Callable[..., bytes]

CID_C = "a7Kp2Lq9Zx0Wv3Rt6Ys1Nd8Mf5Gh4Jb2"
TAG_C_PHONE = "Yt7Rk2Pq9Lm4Nx6Bv1Cz8Dw3Fs5Gh0Jq"
TAG_C_AST = "4f7a2c9e-8b1d-4e6f-a3c5-7d9e1b2f4a6c"


def test_blind_refer(wire: Wire) -> None:
    msg = parse_message(wire("refer_blind"))
    assert msg.method == "REFER" and msg.cseq.number == 7616
    refer_to = msg.refer_to()
    assert refer_to is not None
    assert refer_to.uri.user == "1002" and refer_to.uri.host == "192.168.50.2"
    assert refer_to.replaces is None
    referred_by = msg.referred_by()
    assert referred_by is not None and referred_by.uri.user == "1001"
    assert msg.refer_sub() is None
    event = msg.event()
    assert event is not None and event.package == "refer"


def test_attended_refer_with_escaped_replaces(wire: Wire) -> None:
    msg = parse_message(wire("refer_attended"))
    refer_to = msg.refer_to()
    assert refer_to is not None
    assert refer_to.uri.user == "1002"
    assert refer_to.replaces == ReplacesParams(CID_C, TAG_C_AST, TAG_C_PHONE)
    referred_by = msg.referred_by()
    assert referred_by is not None and referred_by.display_name == "Agent 1001"


def test_refer_with_unescaped_replaces_is_tolerated() -> None:
    data = parse_message(
        b"REFER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REFER\r\n"
        b"Refer-To: <sip:1002@pbx?Replaces=x@h;to-tag=t;from-tag=f>\r\n\r\n"
    )
    refer_to = data.refer_to()
    assert refer_to is not None and refer_to.replaces == ReplacesParams("x@h", "t", "f")


def test_refer_sub_false(wire: Wire) -> None:
    msg = parse_message(wire("refer_no_sub"))
    assert msg.refer_sub() is False
    referred_by = msg.referred_by()
    assert referred_by is not None
    assert referred_by.param("cid") == "<20398823.2UWQFN309shb3@referrer.example>"
    refer_to = msg.refer_to()
    assert refer_to is not None and refer_to.uri.param("user") == "phone"


def test_202_accepted(wire: Wire) -> None:
    msg = parse_message(wire("accepted_202"))
    assert (msg.status_code, msg.reason) == (202, "Accepted")
    assert msg.cseq.method == "REFER"
    assert msg.sipfrag() is None


@pytest.mark.parametrize(
    ("name", "frag", "terminated", "event_id"),
    [
        ("notify_trying", SipFrag(100, "Trying"), False, None),
        ("notify_ok", SipFrag(200, "OK"), True, "7617"),
        ("notify_busy", SipFrag(486, "Busy Here"), True, None),
        ("compact_notify", SipFrag(603, "Declined"), True, "2"),
    ],
)
def test_notify_sipfrag(
    wire: Wire, name: str, frag: SipFrag, terminated: bool, event_id: str | None
) -> None:
    msg = parse_message(wire(name))
    assert msg.method == "NOTIFY"
    assert msg.content_type == "message/sipfrag"
    assert msg.sipfrag() == frag
    state = msg.subscription_state()
    assert state is not None and state.is_terminated is terminated
    if terminated:
        assert state.reason == "noresource"
    event = msg.event()
    assert event is not None and event.package == "refer" and event.id == event_id


def test_invite_with_replaces(wire: Wire) -> None:
    msg = parse_message(wire("invite_replaces"))
    assert msg.replaces() == ReplacesParams(CID_C, TAG_C_PHONE, TAG_C_AST)
    assert msg.headers("require") == ["replaces"]
    referred_by = msg.referred_by()
    assert referred_by is not None and referred_by.uri.user == "1001"


@pytest.mark.parametrize(
    ("body", "frag"),
    [
        (b"SIP/2.0 200 OK", SipFrag(200, "OK")),
        (b"\r\nSIP/2.0 180 Ringing\r\nContact: <sip:x@h>\r\n", SipFrag(180, "Ringing")),
        (b"SIP/2.0 603 Declined\n", SipFrag(603, "Declined")),
        (b"sip/2.0 500\r\n", SipFrag(500, "")),
        (b"SIP/2.0 400 Bad Request \r\n", SipFrag(400, "Bad Request")),
    ],
)
def test_parse_sipfrag(body: bytes, frag: SipFrag) -> None:
    assert parse_sipfrag(body) == frag


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"INVITE sip:a SIP/2.0\r\n", b"SIP/2.0 OK", b"SIP/2.0 20 OK", b"\xff\xfe"],
)
def test_bad_sipfrag(body: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_sipfrag(body)


def test_sipfrag_without_content_type_is_sniffed() -> None:
    base = (
        b"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 3 NOTIFY\r\nEvent: refer\r\n"
    )
    assert parse_message(base + b"\r\nSIP/2.0 200 OK\r\n").sipfrag() == SipFrag(200, "OK")
    assert parse_message(base + b"\r\nhello").sipfrag() is None
    other = base + b"Content-Type: text/plain\r\n\r\nSIP/2.0 200 OK\r\n"
    assert parse_message(other).sipfrag() is None
