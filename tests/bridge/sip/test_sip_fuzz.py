"""Property tests: whatever the bytes, the parser raises SipParseError or nothing."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.sip import (
    SipMessage,
    SipParseError,
    parse_event,
    parse_message,
    parse_name_addr,
    parse_refer_to,
    parse_replaces,
    parse_sipfrag,
    parse_subscription_state,
    parse_uri,
    parse_via,
    sdp_direction,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sip"
SAMPLES = [
    p.read_text(encoding="utf-8").replace("\n", "\r\n").encode()
    for p in sorted(FIXTURES.glob("*.txt"))
]
SIP_CHARS = '<>";,=:@?%&/[]\\ \t\r\nabcSIPtagbranch0123456789.-_'
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PROPERTIES = ("call_id", "from_tag", "to_tag", "cseq", "via_branch", "content_type")
METHODS = (
    "via_branches",
    "vias",
    "from_addr",
    "to_addr",
    "from_uri",
    "to_uri",
    "contact_uri",
    "request_sip_uri",
    "refer_to",
    "referred_by",
    "replaces",
    "event",
    "subscription_state",
    "refer_sub",
    "sipfrag",
    "sdp_direction",
)


def exercise(msg: SipMessage) -> None:
    """Touch every accessor; each may raise SipParseError and nothing else."""
    for name in PROPERTIES:
        with contextlib.suppress(SipParseError):
            getattr(msg, name)
    for name in METHODS:
        with contextlib.suppress(SipParseError):
            getattr(msg, name)()
    for header in msg.header_names():
        for lookup in (msg.header, msg.headers, msg.raw_headers):
            with contextlib.suppress(SipParseError):
                lookup(header)
    repr(msg)


def parse_and_exercise(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    exercise(msg)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A recorded message with a few random edits (cut, insert, overwrite, truncate)."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "overwrite", "truncate", "case"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(
                st.binary(max_size=8) | st.text(SIP_CHARS, max_size=8).map(str.encode)
            )
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "overwrite" and pos < len(data):
            data[pos] = draw(st.sampled_from([*SIP_CHARS.encode(), 0, 0xFF, 0xC3]))
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos : pos + 20] = bytes(data[pos : pos + 20]).swapcase()
    return bytes(data)


@st.composite
def header_soup(draw: st.DrawFn) -> bytes:
    """A plausible start line and mandatory headers with hostile values."""
    value = st.text(SIP_CHARS, max_size=40)
    start = draw(
        st.sampled_from(["INVITE sip:a@h SIP/2.0", "SIP/2.0 200 OK", "NOTIFY sip:x SIP/2.0"])
    )
    names = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Refer-To", "r",
             "Referred-By", "Replaces", "Event", "Subscription-State", "Refer-Sub", "Contact",
             "Content-Type", "Content-Length", "l"]  # fmt: skip
    lines = [start]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines.append(f"{name}: {draw(value)}")
    for _ in range(draw(st.integers(0, 6))):
        lines.append(f"{draw(st.sampled_from(names))}: {draw(value)}")
    body = draw(st.sampled_from([b"", b"SIP/2.0 200 OK\r\n", b"v=0\r\na=sendonly\r\n"]))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_give_a_message_or_sip_parse_error(data: bytes) -> None:
    parse_and_exercise(data)


@FUZZ
@given(mutated())
def test_edited_recorded_messages_give_a_message_or_sip_parse_error(data: bytes) -> None:
    parse_and_exercise(data)


@FUZZ
@given(header_soup())
def test_hostile_header_values_raise_only_sip_parse_error_when_read(data: bytes) -> None:
    parse_and_exercise(data)


@FUZZ
@given(st.text(SIP_CHARS, max_size=80) | st.text(max_size=40))
def test_any_text_gives_each_header_decoder_a_value_or_sip_parse_error(text: str) -> None:
    for decode in (
        parse_uri,
        parse_name_addr,
        parse_refer_to,
        parse_replaces,
        parse_via,
        parse_event,
        parse_subscription_state,
    ):
        with contextlib.suppress(SipParseError):
            decode(text)


@FUZZ
@given(st.binary(max_size=300))
def test_any_body_gives_an_sdp_direction_and_a_sipfrag_or_sip_parse_error(body: bytes) -> None:
    sdp_direction(body)  # documented never to raise
    with contextlib.suppress(SipParseError):
        parse_sipfrag(body)


def test_every_recorded_message_parses() -> None:
    assert len(SAMPLES) >= 15
    for data in SAMPLES:
        exercise(parse_message(data))
