"""dialog-info+xml parsing (hostile input refused), versions, and digest answers (RFC vectors)."""

from __future__ import annotations

import pytest

from bridge.dialog import (
    Challenge,
    DialogInfoError,
    DialogState,
    DigestCredentials,
    DigestError,
    DocumentState,
    HostileXml,
    LineView,
    authorization,
    identity_number,
    parse_challenge,
    parse_dialog_info,
)
from bridge.dialog.digest import response

RINGING = b"""<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full"
  entity="sip:1001@127.0.0.1:5070">
 <dialog id="1001" direction="recipient">
  <remote><identity display="Customer">sip:2000@127.0.0.1</identity>
   <target uri="sip:2000@127.0.0.1" /></remote>
  <local><identity display="Agent 1001">sip:1001@127.0.0.1</identity></local>
  <state>early</state>
 </dialog>
</dialog-info>"""


def doc(version: int, state: str = "full", dialogs: str = "") -> bytes:
    return (
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" '
        f'state="{state}" entity="sip:1001@pbx">{dialogs}</dialog-info>'
    ).encode()


def test_asterisk_ringing_body() -> None:
    info = parse_dialog_info(RINGING)
    assert (info.version, info.state, info.entity) == (
        1,
        DocumentState.FULL,
        "sip:1001@127.0.0.1:5070",
    )
    (d,) = info.dialogs
    assert d.id == "1001" and d.state is DialogState.EARLY and d.direction == "recipient"
    assert d.remote_identity == "sip:2000@127.0.0.1" and d.remote_display == "Customer"
    assert d.call_id is None and d.replaces is None
    assert identity_number(d.remote_identity) == "2000"


def test_rfc4235_dialog_with_tags_event_and_replaces() -> None:
    body = doc(
        3,
        "partial",
        '<dialog id="x" call-id="c1" local-tag="l" remote-tag="r" direction="initiator">'
        '<state event="replaced" code="200">terminated</state>'
        '<replaces call-id="c0" local-tag="a" remote-tag="b"/></dialog>',
    )
    (d,) = parse_dialog_info(body).dialogs
    assert (d.call_id, d.local_tag, d.remote_tag, d.event, d.code) == (
        "c1",
        "l",
        "r",
        "replaced",
        200,
    )
    assert d.replaces is not None and d.replaces.call_id == "c0"


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b'<dialog-info version="1" state="full" entity="x">&lol2;</dialog-info>',
        b'<!doctype dialog-info SYSTEM "file:///etc/passwd"><dialog-info/>',
        b'<dialog-info version="1" state="full" entity="x"><!ENTITY x "y"></dialog-info>',
    ],
)
def test_dtds_and_entities_are_refused(body: bytes) -> None:
    with pytest.raises(HostileXml):
        parse_dialog_info(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<dialog-info",
        b'<presence version="1" state="full" entity="x"/>',
        b'<dialog-info xmlns="urn:other" version="1" state="full" entity="x"/>',
        doc(1).replace(b'version="1"', b'version="-1"'),
        doc(1).replace(b'state="full"', b'state="some"'),
        doc(1, dialogs='<dialog id="a"><state>dancing</state></dialog>'),
        doc(1, dialogs="<dialog><state>early</state></dialog>"),
        doc(1, dialogs='<dialog id="a"></dialog>'),
        b"x" * 70_000,
    ],
)
def test_malformed_bodies_are_typed_errors(body: bytes) -> None:
    with pytest.raises(DialogInfoError):
        parse_dialog_info(body)


def test_versions_stale_dropped_partial_gap_asks_for_full_state() -> None:
    view = LineView()
    early = '<dialog id="a"><state>early</state></dialog>'
    assert view.apply(parse_dialog_info(doc(5, dialogs=early)))
    assert not view.apply(parse_dialog_info(doc(5)))  # a retransmission
    assert not view.apply(parse_dialog_info(doc(4)))  # overtaken
    assert view.stale == 2 and view.dialogs["a"].state is DialogState.EARLY
    confirmed = '<dialog id="b"><state>confirmed</state></dialog>'
    assert view.apply(parse_dialog_info(doc(7, "partial", confirmed)))  # 6 was lost
    assert view.needs_full and view.gaps == 1 and set(view.dialogs) == {"a", "b"}
    assert view.apply(parse_dialog_info(doc(8)))  # full: replaces everything
    assert view.dialogs == {} and not view.needs_full
    view.reset()
    assert view.apply(parse_dialog_info(doc(0)))  # a new subscription starts again


# --- digest ----------------------------------------------------------------------------------


def test_rfc2617_example() -> None:
    challenge = Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", qop=("auth",))
    creds = DigestCredentials("Mufasa", "Circle Of Life")
    digest = response(challenge, creds, "GET", "/dir/index.html", nc=1, cnonce="0a4f113b")
    assert digest == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    header = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    challenge = parse_challenge(header)
    creds = DigestCredentials("Mufasa", "Circle of Life")
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert response(challenge, creds, "GET", "/dir/index.html", nc=1, cnonce=cnonce) == expected
    value = authorization(challenge, creds, "GET", "/dir/index.html", nc=1, cnonce=cnonce)
    assert f'response="{expected}"' in value and "qop=auth, nc=00000001" in value
    assert 'opaque="FQhe' in value and "Circle" not in value


def test_asterisk_challenge_and_refusals() -> None:
    c = parse_challenge(
        'Digest realm="asterisk",nonce="1795615699/286f",opaque="7737",algorithm=MD5,qop="auth"'
    )
    assert (c.realm, c.nonce, c.opaque, c.qop, c.stale) == (
        "asterisk",
        "1795615699/286f",
        "7737",
        ("auth",),
        False,
    )
    for bad in (
        'Basic realm="x"',
        'Digest realm="x"',
        'Digest realm="x",nonce="n",algorithm=SHA-512-256',
        'Digest realm="x",nonce="n",qop="auth-int"',
    ):
        with pytest.raises(DigestError):
            parse_challenge(bad)
    assert "secret" not in repr(DigestCredentials("watcher", "secret"))
