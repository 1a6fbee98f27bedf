"""SIP URIs and name-addr/addr-spec values."""

from __future__ import annotations

import pytest

from bridge.sip import NameAddr, SipParseError, SipUri, parse_name_addr, parse_uri


def test_full_sip_uri() -> None:
    uri = parse_uri(
        "sip:alice:secret@Example.COM:5070;transport=TCP;lr;maddr=239.1.1.1?subject=hi&x=1"
    )
    assert uri == SipUri(
        scheme="sip",
        user="alice",
        host="Example.COM",
        port=5070,
        params=(("transport", "TCP"), ("lr", None), ("maddr", "239.1.1.1")),
        headers=(("subject", "hi"), ("x", "1")),
        password="secret",
    )
    assert uri.param("TRANSPORT") == "TCP"
    assert uri.has_param("lr") and uri.param("lr") is None
    assert not uri.has_param("user")
    assert uri.header("Subject") == "hi" and uri.header("missing") is None


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("sip:pbx.example", None, "pbx.example", None),
        ("SIPS:1001@pbx.example", "1001", "pbx.example", None),
        ("sip:1001@192.168.50.2:5060", "1001", "192.168.50.2", 5060),
        ("sip:1001@[2001:db8::1]:5061", "1001", "[2001:db8::1]", 5061),
        ("sip:[::1]", None, "[::1]", None),
        ("sip:%2B4930123@pbx.example", "+4930123", "pbx.example", None),
        ("sip:+4930123;phone-context=example.com@pbx.example;user=phone", None, None, None),
        ("tel:+1-201-555-0123;phone-context=+1", "+1-201-555-0123", "", None),
    ],
)
def test_uri_shapes(text: str, user: str | None, host: str | None, port: int | None) -> None:
    uri = parse_uri(text)
    assert uri.scheme == text.split(":", 1)[0].lower()
    if host is None:  # user part containing ';' (RFC 3261 allows it in userinfo)
        assert uri.user == "+4930123;phone-context=example.com"
        assert uri.param("user") == "phone"
        return
    assert (uri.user, uri.host, uri.port) == (user, host, port)


def test_escaped_replaces_in_uri_headers() -> None:
    uri = parse_uri("sip:1002@pbx?Replaces=abc%40h%3Bto-tag%3Dx%3Bfrom-tag%3Dy&Require=replaces")
    assert uri.header("replaces") == "abc@h;to-tag=x;from-tag=y"
    assert uri.header("Require") == "replaces"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pbx.example",
        ":x@h",
        "http://example.com/",
        "sip:",
        "sip:@h",
        "sip:a@",
        "sip:a@h:port",
        "sip:a@h:99999",
        "sip:a@h:",
        "sip:a@[::1",
        "sip:a@[::1]x",
        "sip:a b@h",
        "sip:a@h;=x",
        "sip:a@h?=x",
        "sip:a@h<",
        "tel:",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_addr_with_quoted_display_name() -> None:
    value = '"Agent \\"One\\", Sales" <sip:1001@pbx;transport=udp>;tag=abc;expires=60'
    addr = parse_name_addr(value)
    assert addr.display_name == 'Agent "One", Sales'
    assert addr.uri.user == "1001"
    assert addr.uri.param("transport") == "udp"
    assert addr.param("tag") == "abc"
    assert addr.param("EXPIRES") == "60"


def test_name_addr_token_display_name_and_no_space() -> None:
    assert parse_name_addr("Agent One <sip:1@h>").display_name == "Agent One"
    assert parse_name_addr('"X"<sip:1@h>').display_name == "X"
    assert parse_name_addr("<sip:1@h>").display_name is None


def test_addr_spec_params_are_header_params() -> None:
    addr = parse_name_addr("sip:1001@pbx;tag=xyz")
    assert addr == NameAddr(None, SipUri("sip", "1001", "pbx"), (("tag", "xyz"),))


def test_quoted_header_param_value() -> None:
    addr = parse_name_addr('<sip:1001@h>;cid="<x;y@z>";flag')
    assert addr.param("cid") == "<x;y@z>"
    assert addr.params == (("cid", "<x;y@z>"), ("flag", None))


def test_values_are_hashable_and_comparable() -> None:
    a = parse_name_addr("<sip:1@h>;tag=t")
    b = parse_name_addr("<sip:1@h> ;tag=t")
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        '"unterminated <sip:a@h>',
        '"name" sip:a@h',
        'x "name" <sip:a@h>',
        "<sip:a@h",
        "Alice sip:a@h",
        '<sip:a@h>;tag=1;x="open',
        "<sip:a@h>junk",
        "<>",
    ],
)
def test_bad_name_addrs(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)
