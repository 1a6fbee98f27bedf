"""dialog-info XML and desk-phone events: any body, any encoding or declaration, any number
spelling gives a value or the typed error; a NOTIFY carrying any of them is always answered."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.deskphone import poly, snom, yealink
from bridge.dialog import (
    DialogInfoError,
    DigestCredentials,
    LineView,
    Subscription,
    SubscriptionSettings,
    parse_dialog_info,
)
from bridge.errors import InvalidInput
from bridge.sip import parse_message
from bridge.untrusted import UntrustedXmlError, parse_untrusted_xml
from tests.fuzz.oracle import FUZZ, typed, within

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deskphones"
POLY_SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("poly_*.xml"))]
NUMBERS = st.one_of(
    st.sampled_from(["0", "1", "486", " 7 ", "²", "¹", "٣", "①", "1²", "-1", "1e3", "9" * 30, ""]),
    st.text(max_size=6),
)
ENCODINGS = st.sampled_from(
    [
        None,
        "UTF-8",
        "utf-16",
        "UTF-16LE",
        "ISO-8859-1",
        "latin1",
        "windows-1252",
        "bogus",
        "shift_jis",
        "big5",
        "utf-32",
        "",
        "rot13",
        "hex",
        "ut\x00f",
        "ascii",
        "euc-jp",
    ]
)
CODECS = st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "latin-1", "utf-8-sig"])
DTD = st.sampled_from(
    [
        "",
        '<!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
        "<!DOCTYPE d>",
        '<!ENTITY x "y">',
        '<!doctype d SYSTEM "file:///etc/passwd">',
    ]
)
STATES = st.sampled_from(["trying", "proceeding", "early", "confirmed", "terminated", "x", ""])


@st.composite
def dialog_documents(draw: st.DrawFn) -> bytes:
    encoding = draw(ENCODINGS)
    declaration = "" if encoding is None else f'<?xml version="1.0" encoding="{encoding}"?>'
    dialogs = "".join(
        f'<dialog id="{draw(st.text(max_size=4))}"><state code="{draw(NUMBERS)}">'
        f"{draw(STATES)}</state><remote><identity>{draw(st.text(max_size=8))}</identity>"
        "</remote></dialog>"
        for _ in range(draw(st.integers(0, 3)))
    )
    text = (
        f'{declaration}{draw(DTD)}<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{draw(NUMBERS)}" state="{draw(st.sampled_from(["full", "partial", "x"]))}" '
        f'entity="sip:1001@pbx">{dialogs}{draw(st.sampled_from(["", "&a;", "&lt;", "&#xFFFF;"]))}'
        "</dialog-info>"
    )
    return text.encode(draw(CODECS), "replace")


def parse_dialog(body: bytes) -> None:
    with within(2.0):
        result = typed(lambda: parse_dialog_info(body))
    assert not isinstance(result, Exception) or isinstance(result, DialogInfoError), result
    if not isinstance(result, Exception):
        LineView().apply(result)


@FUZZ
@given(dialog_documents())
def test_any_dialog_document_is_parsed_or_refused_typed(body: bytes) -> None:
    parse_dialog(body)
    result = typed(lambda: parse_untrusted_xml(body))
    assert not isinstance(result, Exception) or isinstance(result, UntrustedXmlError)


@FUZZ
@given(st.binary(max_size=1024))
def test_any_bytes_are_a_dialog_document_or_dialog_info_error(body: bytes) -> None:
    parse_dialog(body)


SETTINGS = SubscriptionSettings(
    pbx=("127.0.0.1", 5070),
    local=("127.0.0.1", 40000),
    credentials=DigestCredentials("watcher", "s3cret"),
    domain="127.0.0.1",
    expires=600,
)


@FUZZ
@given(st.lists(st.one_of(dialog_documents(), st.binary(max_size=256)), min_size=1, max_size=5))
def test_every_notify_is_answered_whatever_its_body(bodies: list[bytes]) -> None:
    counter = itertools.count(1)
    sub = Subscription("1001", SETTINGS, token=lambda: f"t{next(counter)}", rng=random.Random(1))
    (first,) = sub.start(0.0)
    sent = parse_message(first.data)
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {sent.header('via')}\r\nFrom: {sent.header('from')}\r\n"
        f"To: {sent.header('to')};tag=pbx\r\nCall-ID: {sent.call_id}\r\n"
        f"CSeq: {sent.header('cseq')}\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
    sub.receive(parse_message(ok.encode()), 0.1)
    for n, body in enumerate(bodies, start=2):
        head = (
            "NOTIFY sip:watcher@127.0.0.1:40000 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKn{n}\r\n"
            "From: <sip:1001@127.0.0.1>;tag=pbx\r\n"
            f"To: <sip:watcher@127.0.0.1>;tag={sub.local_tag}\r\nCall-ID: {sub.call_id}\r\n"
            f"CSeq: {n} NOTIFY\r\nEvent: dialog\r\nSubscription-State: active;expires=500\r\n"
            "Content-Type: application/dialog-info+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        with within(2.0):
            step = sub.receive(parse_message(head.encode() + body), 1.0 + n)
        (reply,) = step.outgoing
        assert parse_message(reply.data).status_code == 200


@st.composite
def poly_bodies(draw: st.DrawFn) -> bytes:
    sample = draw(st.sampled_from(POLY_SAMPLES)).decode("utf-8", "replace")
    encoding = draw(ENCODINGS)
    if encoding is not None:
        sample = sample.split("?>", 1)[-1] if sample.startswith("<?xml") else sample
        sample = f'<?xml version="1.0" encoding="{encoding}"?>' + draw(DTD) + sample
    cut = draw(st.integers(0, len(sample)))
    sample = sample[:cut] + draw(st.text(max_size=6)) + sample[cut:]
    return sample.encode(draw(CODECS), "replace")


@FUZZ
@given(st.one_of(poly_bodies(), st.binary(max_size=512)))
def test_any_poly_body_is_events_or_invalid_input(body: bytes) -> None:
    with within(2.0):
        result = typed(lambda: poly.parse(body))
    assert not isinstance(result, Exception) or isinstance(result, InvalidInput), result


QUERY_KEYS = ("mac", "ip", "local", "remote", "call_id", "user", "active_user", "display_remote")
QUERY_VALUES = st.one_of(
    st.sampled_from(["001565abcdef", "00:15:65:AB:CD:EF", "127.0.0.1", "²", "", "$mac", "\x00"]),
    st.text(max_size=30),
)


@FUZZ
@given(
    st.sampled_from([*yealink.EVENTS, *snom.EVENTS]),
    st.dictionaries(st.sampled_from(QUERY_KEYS), QUERY_VALUES, max_size=8),
)
def test_any_action_url_query_is_an_event_or_invalid_input(
    event: str, query: dict[str, str]
) -> None:
    for vendor in (yealink, snom):
        if event in vendor.EVENTS:
            result = typed(lambda vendor=vendor: vendor.parse(event, query))
            assert not isinstance(result, Exception) or isinstance(result, InvalidInput)
