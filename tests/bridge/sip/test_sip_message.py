"""parse_message on real message shapes: start lines, dialog keys, header access, framing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.sip import CSeq, SdpDirection, SipParseError, parse_message

Wire = Callable[..., bytes]

CID_A = "hVqS-3jZpPq1Ll2aH5Q7zrbM5lUThb8X"
TAG_PHONE = "Bq8o5iV3iCW5v2UVzZ6Y0E2gXLT0Dxn8"
TAG_AST = "9e3c1d6a-43c1-4c2e-a1d5-1f0b6e1a2b3c"

MINIMAL = (
    b"OPTIONS sip:pbx.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    b"From: <sip:a@pbx.example>;tag=f\r\n"
    b"To: <sip:pbx.example>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
)


def test_invite_from_pjsua(wire: Wire) -> None:
    msg = parse_message(wire("invite_pjsua_sdp"))
    assert msg.is_request
    assert msg.method == "INVITE"
    assert msg.request_uri == "sip:2001@192.168.50.2"
    assert msg.status_code is None and msg.reason is None
    assert msg.call_id == CID_A
    assert msg.from_tag == TAG_PHONE
    assert msg.to_tag is None
    assert msg.cseq == CSeq(7613, "INVITE")
    assert msg.via_branch == "z9hG4bKPjb1f2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
    assert msg.content_type == "application/sdp"
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"cname:1b2e0d5c69d75b31\r\n")
    assert len(msg.body) == int(msg.header("Content-Length") or "")
    assert msg.sdp_direction() is SdpDirection.SENDRECV
    assert msg.sipfrag() is None
    assert msg.from_addr().display_name == "Agent 1001"
    assert msg.from_uri().user == "1001"
    assert msg.to_uri().user == "2001"
    contact = msg.contact_uri()
    assert contact is not None and contact.port == 5060 and contact.has_param("ob")
    request_uri = msg.request_sip_uri()
    assert request_uri is not None and request_uri.user == "2001"


def test_response_200_with_sdp(wire: Wire) -> None:
    msg = parse_message(wire("ok_200_invite_sdp"))
    assert not msg.is_request
    assert (msg.status_code, msg.reason) == (200, "OK")
    assert msg.method is None and msg.request_uri is None and msg.request_sip_uri() is None
    assert msg.cseq.method == "INVITE"
    assert (msg.from_tag, msg.to_tag) == (TAG_PHONE, TAG_AST)
    assert msg.sdp_direction() is SdpDirection.SENDRECV
    assert msg.headers("Supported") == ["100rel", "timer", "replaces", "norefersub", "histinfo"]
    assert msg.header("session-expires") == "1800;refresher=uac"


@pytest.mark.parametrize(
    ("name", "code", "to_tag"),
    [("trying_100", 100, None), ("ringing_180", 180, TAG_AST), ("accepted_202", 202, TAG_AST)],
)
def test_provisional_and_202(wire: Wire, name: str, code: int, to_tag: str | None) -> None:
    msg = parse_message(wire(name))
    assert msg.status_code == code
    assert msg.to_tag == to_tag
    assert msg.body == b""


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("reinvite_hold_sendonly", SdpDirection.SENDONLY),
        ("reinvite_hold_old_style", SdpDirection.INACTIVE),
        ("reinvite_media_inactive", SdpDirection.INACTIVE),
        ("invite_replaces", SdpDirection.SENDRECV),
    ],
)
def test_hold_direction(wire: Wire, name: str, direction: SdpDirection) -> None:
    msg = parse_message(wire(name))
    assert msg.sdp_direction() is direction
    assert msg.to_tag is not None or name == "invite_replaces"


def test_bye_from_asterisk(wire: Wire) -> None:
    msg = parse_message(wire("bye"))
    assert msg.method == "BYE"
    assert msg.cseq == CSeq(28293, "BYE")
    assert (msg.from_tag, msg.to_tag) == (TAG_AST, TAG_PHONE)
    assert msg.header("reason") == 'Q.850;cause=16;text="Normal Clearing"'
    assert msg.headers("Reason") == ['Q.850;cause=16;text="Normal Clearing"']


def test_asterisk_invite_to_target(wire: Wire) -> None:
    msg = parse_message(wire("asterisk_invite_to_target"))
    assert msg.header("User-Agent") == "Asterisk PBX 22.1.0"
    assert msg.headers("p-asserted-identity") == ['"Customer 2001" <sip:2001@192.168.50.2>']
    assert msg.header("Diversion") == "<sip:1001@192.168.50.2>;reason=unconditional"
    assert "REFER" in msg.headers("Allow") and len(msg.headers("allow")) == 14
    assert msg.replaces() is None and msg.refer_to() is None


def test_compact_forms_expand(wire: Wire) -> None:
    msg = parse_message(wire("compact_notify"))
    assert msg.call_id == "3f2a1b0c9d8e7f6a@192.168.50.12"
    assert (msg.from_tag, msg.to_tag) == ("77f1e3", "a1c9")
    assert msg.via_branch == "z9hG4bK-524287-1---7b4e0b2a3c1d"
    assert msg.via_branches() == ["z9hG4bK-524287-1---7b4e0b2a3c1d", "z9hG4bK-proxy-0001"]
    assert msg.header("Content-Type") == msg.header("c") == "message/sipfrag"
    assert msg.headers("Allow-Events") == ["refer", "dialog"]
    assert msg.headers("k") == ["replaces", "norefersub"]
    assert msg.header("i") == msg.call_id
    assert set(msg.header_names()) >= {"via", "from", "to", "call-id", "contact", "event"}
    event = msg.event()
    assert event is not None and (event.package, event.id) == ("refer", "2")
    assert msg.to_addr().display_name == "Agent 1001"


def test_compact_refer(wire: Wire) -> None:
    msg = parse_message(wire("compact_refer"))
    assert msg.header("subject") == "transfer"
    assert msg.header("Session-Expires") == "1800;refresher=uac"
    refer_to = msg.refer_to()
    assert refer_to is not None and refer_to.uri.user == "1003"
    assert refer_to.replaces is not None and refer_to.replaces.early_only
    referred_by = msg.referred_by()
    assert referred_by is not None and referred_by.uri.user == "1001"
    vias = msg.vias()
    assert vias[0].transport == "TCP" and vias[0].port == 5060


def test_header_names_are_case_insensitive() -> None:
    data = MINIMAL.replace(b"Call-ID", b"CALL-id").replace(b"CSeq", b"cseq") + b"\r\n"
    msg = parse_message(data)
    assert msg.call_id == "c1"
    assert msg.header("Call-Id") == msg.header("CALL-ID") == msg.header("i") == "c1"
    assert msg.has_header("cSeQ") and not msg.has_header("Refer-To")
    assert msg.header("Refer-To") is None and msg.headers("Refer-To") == []


def test_repeated_and_comma_joined_headers() -> None:
    data = MINIMAL + (
        b'Contact: "Doe, John" <sip:j@h;x=1,2>;q=0.5, <sip:k@h>\r\n'
        b"Contact: sip:l@h\r\n"
        b"Route: <sip:p1;lr>,<sip:p2;lr>\r\n"
        b"Subject: one, two\r\n"
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
        b"X-Custom: a\r\nx-custom: b\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.headers("contact") == ['"Doe, John" <sip:j@h;x=1,2>;q=0.5', "<sip:k@h>", "sip:l@h"]
    assert msg.header("Contact") == '"Doe, John" <sip:j@h;x=1,2>;q=0.5'
    assert msg.raw_headers("contact")[0].endswith("<sip:k@h>")
    assert msg.headers("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert msg.headers("subject") == ["one, two"]
    assert msg.headers("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert msg.headers("X-CUSTOM") == ["a", "b"]
    contact = msg.contact_uri()
    assert contact is not None and contact.user == "j"


def test_via_list_in_one_line() -> None:
    data = MINIMAL.replace(
        b"branch=z9hG4bK1", b"branch=z9hG4bKtop ;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKlow"
    )
    msg = parse_message(data + b"\r\n")
    assert msg.via_branch == "z9hG4bKtop"
    assert msg.via_branches() == ["z9hG4bKtop", "z9hG4bKlow"]


@pytest.mark.parametrize(
    ("via", "branch"),
    [
        (b"SIP/2.0/UDP h;BRANCH=z9hG4bKup", "z9hG4bKup"),
        (b"SIP/2.0/UDP h ; branch = z9hG4bKsp", "z9hG4bKsp"),
        (b"SIP/2.0/UDP h;rport", None),
        (b"SIP/2.0/UDP h", None),
        (b'SIP/2.0/UDP h;x="a,b;branch=no";branch=z9hG4bKq', "z9hG4bKq"),
        (b"SIP/2.0/UDP h, SIP/2.0/UDP g;branch=z9hG4bKsecond", None),
    ],
)
def test_via_branch_spellings(via: bytes, branch: str | None) -> None:
    data = MINIMAL.replace(b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", via) + b"\r\n"
    assert parse_message(data).via_branch == branch


@pytest.mark.parametrize(
    ("from_value", "tag"),
    [
        (b"<sip:a@h>;tag=abc", "abc"),
        (b"<sip:a@h> ; TAG = abc ", "abc"),
        (b"sip:a@h;tag=abc", "abc"),
        (b'"A;tag=no>" <sip:a@h;tag=uri>;x="y>";tag=real', "real"),
        (b"<sip:a@h;tag=uri-param>", None),
        (b"sip:a@h", None),
        (b"Alice <sip:a@h>;tag=t1;other", "t1"),
    ],
)
def test_from_tag_spellings(from_value: bytes, tag: str | None) -> None:
    data = MINIMAL.replace(b"<sip:a@pbx.example>;tag=f", from_value) + b"\r\n"
    assert parse_message(data).from_tag == tag


def test_bare_lf_line_endings(wire: Wire) -> None:
    msg = parse_message(wire("refer_blind", crlf=False))
    assert msg.method == "REFER" and msg.call_id == CID_A
    assert msg.header("Refer-To") == "sip:1002@192.168.50.2"
    assert msg.body == b""


def test_mixed_line_endings_and_leading_crlf() -> None:
    data = b"\r\n\r\n" + MINIMAL.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\n") + b"\r\n"
    msg = parse_message(data)
    assert msg.call_id == "c1" and msg.cseq == CSeq(1, "OPTIONS")


def test_folded_header_line() -> None:
    data = MINIMAL.replace(b"Call-ID: c1\r\n", b"Subject: first\r\n  second\r\nCall-ID: c1\r\n")
    msg = parse_message(data + b"\r\n")
    assert msg.header("subject") == "first second"
    assert msg.call_id == "c1"


def test_whitespace_before_colon() -> None:
    msg = parse_message(MINIMAL.replace(b"Call-ID:", b"Call-ID \t:") + b"\r\n")
    assert msg.call_id == "c1"


def test_content_length_cuts_the_body() -> None:
    msg = parse_message(MINIMAL + b"Content-Length: 4\r\n\r\nbodyEXTRA")
    assert msg.body == b"body"


def test_no_content_length_takes_the_rest() -> None:
    assert parse_message(MINIMAL + b"\r\nbody").body == b"body"


def test_headers_without_blank_line_but_complete() -> None:
    msg = parse_message(MINIMAL)
    assert msg.body == b"" and msg.call_id == "c1"


def test_bytearray_and_memoryview_accepted() -> None:
    data = MINIMAL + b"\r\n"
    assert parse_message(bytearray(data)).call_id == "c1"
    assert parse_message(memoryview(data)).call_id == "c1"


def test_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_message("INVITE sip:a SIP/2.0\r\n\r\n")  # type: ignore[arg-type]


def test_non_utf8_display_name_is_replaced_not_raised() -> None:
    data = MINIMAL.replace(b"<sip:a@pbx.example>", b'"Ren\xe9" <sip:a@pbx.example>') + b"\r\n"
    msg = parse_message(data)
    assert msg.from_addr().display_name == "Ren\ufffd"
    assert msg.from_tag == "f"


def test_repr_names_the_message() -> None:
    assert "OPTIONS" in repr(parse_message(MINIMAL + b"\r\n"))


def test_cseq_is_decoded_once_and_kept() -> None:
    msg = parse_message(MINIMAL + b"\r\n")
    assert msg.cseq is msg.cseq


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (MINIMAL.replace(b"Call-ID: c1\r\n", b""), "call-id"),
        (MINIMAL.replace(b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n", b""), "via"),
        (MINIMAL.replace(b"Call-ID: c1", b"Call-ID:   "), "Call-ID"),
        (MINIMAL.replace(b"OPTIONS sip:pbx.example SIP/2.0", b"OPTIONS sip:pbx.example"), "start"),
        (MINIMAL.replace(b"SIP/2.0\r\n", b"HTTP/1.1\r\n", 1), "start line"),
        (MINIMAL.replace(b"OPTIONS sip", b"OPT<IONS sip"), "start line"),
        (b"SIP/2.0 2000 OK\r\n" + MINIMAL.split(b"\r\n", 1)[1], "status code"),
        (b"SIP/2.0 099 Low\r\n" + MINIMAL.split(b"\r\n", 1)[1], "status code"),
        (b"SIP/3.0 200 OK\r\n" + MINIMAL.split(b"\r\n", 1)[1], "status line"),
        (MINIMAL + b"garbage line\r\n\r\n", "colon"),
        (MINIMAL + b": no name\r\n\r\n", "name"),
        (b"OPTIONS sip:a SIP/2.0\r\n folded first\r\n\r\n", "continuation"),
        (MINIMAL + b"Content-Length: 10\r\n\r\nshort", "Content-Length"),
        (MINIMAL + b"Content-Length: -1\r\n\r\n", "Content-Length"),
        (MINIMAL + b"Content-Length: 1" + b"0" * 5000 + b"\r\n\r\n", "Content-Length"),
        (MINIMAL + b"Content-Length: \xd9\xa1\r\n\r\n", "Content-Length"),
        (MINIMAL + b"Call-ID: c2", "truncated"),
    ],
)
def test_malformed_raises_sip_parse_error(data: bytes, words: str) -> None:
    with pytest.raises(SipParseError, match=f"(?i){words}"):
        parse_message(data)


def test_sip_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_message(b"nonsense")


@pytest.mark.parametrize(
    ("replace", "accessor"),
    [
        ((b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"), "cseq"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 1"), "cseq"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 99999999999 OPTIONS"), "cseq"),
        ((b"<sip:a@pbx.example>;tag=f", b"<sip:a@pbx.example>;tag="), "from_tag"),
        ((b"<sip:a@pbx.example>;tag=f", b"<sip:a@pbx.example;tag=f"), "from_uri"),
        ((b"To: <sip:pbx.example>", b"To: Bob sip:b@h"), "to_uri"),
    ],
)
def test_malformed_header_raises_on_access(replace: tuple[bytes, bytes], accessor: str) -> None:
    msg = parse_message(MINIMAL.replace(*replace) + b"\r\n")
    with pytest.raises(SipParseError):
        value = getattr(msg, accessor)
        if callable(value):
            value()
