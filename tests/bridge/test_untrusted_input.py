"""Issue 14 item 2: numbers and XML from peers end in the parser's typed error, never another.

`"²".isdigit()` is true and `int("²")` raises; `xml.etree` raises `LookupError`/`ValueError` on
some encoding declarations and expands internal entities; a `<!DOCTYPE` in a UTF-16 body is not
the bytes `<!DOCTYPE`. Each case reached a user: a dropped resync, an unanswered NOTIFY, a 500.
"""

from __future__ import annotations

import itertools
import random

import pytest

from bridge.ami import AmiEvent
from bridge.ami.calls import AmiCallTracker
from bridge.ami.channels import event_time, listing_age
from bridge.ami.phones import AmiPhones
from bridge.deskphone import poly
from bridge.dialog import (
    DialogInfoError,
    DigestCredentials,
    HostileXml,
    Subscription,
    SubscriptionSettings,
    SubState,
    parse_dialog_info,
)
from bridge.dialog.wire import expires_of, retry_after_of
from bridge.errors import BridgeError, InvalidInput
from bridge.sip import parse_message
from bridge.untrusted import UntrustedXmlError, ascii_uint, parse_untrusted_xml

UNICODE_DIGITS = ["²", "¹", "\u0663", "①", "\U0001d7d7", "1²", "12³4"]  # Arabic 3, bold 9
DOC = (
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full" '
    'entity="sip:1001@pbx"><dialog id="a"><state code="{code}">terminated</state></dialog>'
    "</dialog-info>"
)


def dialog_doc(version: str = "1", code: str = "486") -> str:
    return DOC.format(version=version, code=code)


@pytest.mark.parametrize("digits", UNICODE_DIGITS)
def test_unicode_digits_are_not_numbers(digits: str) -> None:
    assert digits.isdigit() or not digits.isascii()
    assert ascii_uint(digits) is None
    with pytest.raises(DialogInfoError):
        parse_dialog_info(dialog_doc(version=digits).encode())
    with pytest.raises(DialogInfoError):
        parse_dialog_info(dialog_doc(code=digits).encode())


def test_ascii_numbers_still_parse() -> None:
    info = parse_dialog_info(dialog_doc(version=" 7 ", code="486").encode())
    assert info.version == 7 and info.dialogs[0].code == 486


def _response(*headers: str) -> bytes:
    return "\r\n".join(
        [
            "SIP/2.0 503 Busy",
            "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKx",
            "From: <sip:w@pbx>;tag=a",
            "To: <sip:1001@pbx>;tag=b",
            "Call-ID: c",
            "CSeq: 1 SUBSCRIBE",
            *headers,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


@pytest.mark.parametrize("digits", UNICODE_DIGITS)
def test_expires_and_retry_after_with_unicode_digits_are_absent(digits: str) -> None:
    message = parse_message(_response(f"Expires: {digits}", f"Retry-After: {digits}"))
    assert expires_of(message) is None and retry_after_of(message) is None
    message = parse_message(_response("Expires: 600", "Retry-After: 30 (busy);duration=5"))
    assert expires_of(message) == 600 and retry_after_of(message) == 30.0


SETTINGS = SubscriptionSettings(
    pbx=("127.0.0.1", 5070),
    local=("127.0.0.1", 40000),
    credentials=DigestCredentials("watcher", "s3cret"),
    domain="127.0.0.1",
    expires=600,
)


def _subscription() -> Subscription:
    counter = itertools.count(1)
    return Subscription("1001", SETTINGS, token=lambda: f"t{next(counter)}", rng=random.Random(1))


def _answer(request: bytes, code: int, *extra: str) -> bytes:
    sent = parse_message(request)
    return "\r\n".join(
        [
            f"SIP/2.0 {code} Whatever",
            f"Via: {sent.header('via')}",
            f"From: {sent.header('from')}",
            f"To: {sent.header('to')};tag=pbx-tag",
            f"Call-ID: {sent.call_id}",
            f"CSeq: {sent.header('cseq')}",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


def test_a_subscription_answered_with_unicode_digits_goes_on() -> None:
    sub = _subscription()
    (first,) = sub.start(0.0)
    sub.receive(parse_message(_answer(first.data, 200, "Expires: ²")), 0.1)
    assert sub.state is SubState.ACTIVE  # the requested 600 s hold; nothing raised
    refused = _subscription()
    (first,) = refused.start(0.0)
    refused.receive(parse_message(_answer(first.data, 503, "Retry-After: ²")), 0.1)
    assert refused.state is not SubState.ACTIVE and refused.next_deadline() is not None


def _notify(sub: Subscription, body: bytes) -> bytes:
    head = (
        "NOTIFY sip:watcher@127.0.0.1:40000 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKn2\r\n"
        "From: <sip:1001@127.0.0.1>;tag=pbx-tag\r\n"
        f"To: <sip:watcher@127.0.0.1>;tag={sub.local_tag}\r\n"
        f"Call-ID: {sub.call_id}\r\nCSeq: 2 NOTIFY\r\nEvent: dialog\r\n"
        "Subscription-State: active;expires=500\r\n"
        "Content-Type: application/dialog-info+xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


ENTITY_BOMB = (
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY a "'
    + "x" * 40
    + '">'
    + "".join(f'<!ENTITY {chr(ord(p) + 1)} "{("&" + p + ";") * 8}">' for p in "abcde")
    + "]>"
    + dialog_doc().replace("terminated", "&f;terminated")
)
BAD_BODIES = {
    "unknown_encoding": b'<?xml version="1.0" encoding="bogus"?>' + dialog_doc().encode(),
    "multibyte_encoding": b'<?xml version="1.0" encoding="shift_jis"?>' + dialog_doc().encode(),
    "nul_in_encoding": b'<?xml version="1.0" encoding="ut\x00f"?>' + dialog_doc().encode(),
    "utf16_declared_on_ascii": b'<?xml version="1.0" encoding="utf-16"?>' + dialog_doc().encode(),
    "utf32": ('<?xml version="1.0" encoding="utf-32"?>' + dialog_doc()).encode("utf-32"),
    "bad_utf8": dialog_doc().encode().replace(b"sip:1001", b"sip:\xff1001"),
    "utf16_entity_bomb": ENTITY_BOMB.encode("utf-16"),
    "utf16le_no_bom_doctype": ENTITY_BOMB.encode("utf-16-le"),
    "utf16be_no_bom_doctype": ENTITY_BOMB.encode("utf-16-be"),
}
HOSTILE = {"utf16_entity_bomb", "utf16le_no_bom_doctype", "utf16be_no_bom_doctype"}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_encodings_and_hidden_doctypes_are_typed_refusals(name: str) -> None:
    body = BAD_BODIES[name]
    with pytest.raises(HostileXml if name in HOSTILE else DialogInfoError):
        parse_dialog_info(body)
    with pytest.raises(UntrustedXmlError) as caught:
        parse_untrusted_xml(body)
    assert caught.value.hostile == (name in HOSTILE)
    assert isinstance(caught.value, BridgeError)


def test_the_bomb_is_small_and_would_have_expanded() -> None:
    body = BAD_BODIES["utf16_entity_bomb"]
    assert len(body) < 2_000 and b"<!DOCTYPE" not in body  # what the byte search missed
    assert 40 * 8**5 > 1_000_000  # what &f; would expand to


@pytest.mark.parametrize("codec", ["utf-16", "utf-8-sig", "latin-1"])
def test_accepted_encodings_are_read(codec: str) -> None:
    declared = {"utf-16": "UTF-16", "utf-8-sig": "UTF-8", "latin-1": "ISO-8859-1"}[codec]
    text = f'<?xml version="1.0" encoding="{declared}"?>' + dialog_doc().replace('id="a"', 'id="é"')
    info = parse_dialog_info(text.encode(codec))
    assert info.dialogs[0].id == "é" and info.dialogs[0].code == 486


def test_a_notify_with_an_unreadable_body_is_answered() -> None:
    sub = _subscription()
    (first,) = sub.start(0.0)
    sub.receive(parse_message(_answer(first.data, 200, "Expires: 600")), 0.1)
    for name in sorted(BAD_BODIES):
        step = sub.receive(parse_message(_notify(sub, BAD_BODIES[name])), 1.0)
        (reply,) = step.outgoing
        # Answered like any unusable body (200, counted malformed, dropped): an error answer
        # would make Asterisk end the subscription.
        assert parse_message(reply.data).status_code == 200, name
        assert step.malformed == 1 and step.documents == [], name


POLY = (
    '<PolycomIPPhone><CallStateChangeEvent CallReference="0x1" CallState="Connected">'
    "<MACAddress>0004f214b89e</MACAddress><PhoneIP>127.0.0.1</PhoneIP>"
    "<CallLineInfo><CallInfo><CallState>Connected</CallState>"
    "<CallingPartyDirNum>+34900000001@pbx</CallingPartyDirNum></CallInfo></CallLineInfo>"
    "</CallStateChangeEvent></PolycomIPPhone>"
)


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0" encoding="bogus"?>' + POLY.encode(),
        b'<?xml version="1.0" encoding="big5"?>' + POLY.encode(),
        ('<!DOCTYPE p [<!ENTITY x "y">]>' + POLY).encode("utf-16"),
    ],
)
def test_poly_bodies_with_bad_encodings_are_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        poly.parse(body)
    assert caught.value.code == "invalid_body"
    assert poly.parse(POLY.encode("utf-16")).mac == "0004f214b89e"


def _row(uniqueid: str) -> AmiEvent:
    return AmiEvent(
        "CoreShowChannel",
        (
            ("Event", "CoreShowChannel"),
            ("Channel", "PJSIP/1001-0000000a"),
            ("ChannelStateDesc", "Up"),
            ("ConnectedLineNum", "2000"),
            ("Uniqueid", uniqueid),
            ("ChanVariable", "SIPCALLID=customer-call"),
            ("Application", "AppDial"),
        ),
    )


@pytest.mark.parametrize("uniqueid", ["².1", "1.²", "\u0661.1"])
def test_a_channel_listing_with_unicode_digits_keeps_the_resync(uniqueid: str) -> None:
    assert listing_age(_row(uniqueid))[0] == 1 << 62
    tracker = AmiCallTracker("ami", AmiPhones([("sip:1001@pbx", None)]))
    tracker.reset(resync=True)
    for row in (_row(uniqueid), _row("1795613972.9")):
        tracker.feed(row, 5.0)
    done = AmiEvent("CoreShowChannelsComplete", (("Event", "CoreShowChannelsComplete"),))
    tracker.feed(done, 5.0)
    assert "1795613972.9" in tracker.legs  # the listing was used, not dropped whole


@pytest.mark.parametrize("stamp", ["²", "1_000", "nan", "inf", "1e3", "\u0661\u0662"])
def test_odd_ami_timestamps_fall_back_to_the_time_received(stamp: str) -> None:
    assert event_time(stamp, 42.0) == 42.0
    assert event_time("1795613972.250", 42.0) == 1795613972.25


@pytest.mark.parametrize("port", ["²", "5²", "\u0665\u0660\u0660\u0660"])
def test_a_listen_port_in_unicode_digits_is_a_configuration_error(port: str) -> None:
    from desktop_api.config import ConfigError, parse_listen

    with pytest.raises(ConfigError):
        parse_listen(f"127.0.0.1:{port}", "sources.hep[0]")
