"""The SUBSCRIBE state machine with a deterministic clock: digest, refresh, NOTIFY, failures."""

from __future__ import annotations

import itertools
import random

import pytest

from bridge.dialog import (
    TRANSITIONS,
    DigestCredentials,
    Outgoing,
    SubEvent,
    Subscription,
    SubscriptionError,
    SubscriptionSettings,
    SubscriptionStateError,
    SubState,
)
from bridge.dialog.digest import parse_challenge, response
from bridge.sip import SipMessage, parse_message

SETTINGS = SubscriptionSettings(
    pbx=("127.0.0.1", 5070),
    local=("127.0.0.1", 40000),
    credentials=DigestCredentials("watcher", "s3cret"),
    domain="127.0.0.1",
    expires=600,
)
CHALLENGE = 'Digest realm="asterisk",nonce="n-1",opaque="op",algorithm=MD5,qop="auth"'
BODY = (
    '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
    'entity="sip:1001@127.0.0.1"><dialog id="1001"><state>terminated</state></dialog></dialog-info>'
)


def new_sub() -> Subscription:
    counter = itertools.count(1)
    return Subscription("1001", SETTINGS, token=lambda: f"t{next(counter)}", rng=random.Random(1))


def only(out: list[Outgoing]) -> SipMessage:
    assert len(out) == 1, out
    return parse_message(out[0].data)


def answer(request: SipMessage, code: int, *extra: str, to_tag: str = "pbx-tag") -> SipMessage:
    lines = [
        f"SIP/2.0 {code} Whatever",
        f"Via: {request.header('via')}",
        f"From: {request.header('from')}",
        f"To: {request.header('to')};tag={to_tag}"
        if code != 100
        else f"To: {request.header('to')}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.header('cseq')}",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_message("\r\n".join(lines).encode())


def notify(sub: Subscription, state: str, body: str = BODY, cseq: int = 1) -> SipMessage:
    raw = (
        f"NOTIFY sip:watcher@127.0.0.1:40000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKn{cseq}\r\n"
        "From: <sip:1001@127.0.0.1>;tag=pbx-tag\r\n"
        f"To: <sip:watcher@127.0.0.1>;tag={sub.local_tag}\r\n"
        f"Call-ID: {sub.call_id}\r\nCSeq: {cseq} NOTIFY\r\nEvent: dialog\r\n"
        f"Subscription-State: {state}\r\nContent-Type: application/dialog-info+xml\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )
    return parse_message(raw.encode())


def subscribed(sub: Subscription, now: float = 0.0) -> None:
    first = only(sub.start(now))
    second = only(sub.receive(answer(first, 401, f"WWW-Authenticate: {CHALLENGE}"), now).outgoing)
    sub.receive(answer(second, 200, "Expires: 600"), now)
    assert sub.state is SubState.ACTIVE


def test_subscribe_digest_then_active() -> None:
    sub = new_sub()
    first = only(sub.start(0.0))
    assert first.method == "SUBSCRIBE" and first.request_uri == "sip:1001@127.0.0.1"
    assert first.header("event") == "dialog" and first.header("expires") == "600"
    assert first.header("accept") == "application/dialog-info+xml"
    assert first.header("contact") == "<sip:watcher@127.0.0.1:40000>"
    assert first.header("authorization") is None and sub.state is SubState.SUBSCRIBING
    step = sub.receive(answer(first, 401, f"WWW-Authenticate: {CHALLENGE}"), 0.1)
    second = only(step.outgoing)
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    auth = second.header("authorization") or ""
    expected = response(
        parse_challenge(CHALLENGE),
        SETTINGS.credentials,
        "SUBSCRIBE",
        "sip:1001@127.0.0.1",
        nc=1,
        cnonce="t5",
    )
    assert f'response="{expected}"' in auth and 'opaque="op"' in auth and "s3cret" not in auth
    sub.receive(answer(second, 200, "Expires: 600"), 0.2)
    assert sub.state is SubState.ACTIVE and sub.remote_tag == "pbx-tag"
    assert sub.next_deadline() == pytest.approx(0.2 + 540)


def test_notify_is_answered_and_its_document_handed_on() -> None:
    sub = new_sub()
    subscribed(sub)
    step = sub.receive(notify(sub, "active;expires=599"), 1.0)
    (reply,) = step.outgoing
    ok = parse_message(reply.data)
    assert reply.reply and ok.status_code == 200 and ok.call_id == sub.call_id
    assert ok.header("cseq") == "1 NOTIFY" and ok.via_branch == "z9hG4bKn1"
    assert [d.entity for d in step.documents] == ["sip:1001@127.0.0.1"]
    bad = sub.receive(notify(sub, "active", body="<dialog-info", cseq=2), 1.1)
    assert bad.malformed == 1 and bad.documents == []
    assert parse_message(bad.outgoing[0].data).status_code == 200  # answered, then dropped


def test_refresh_before_expiry_reuses_the_dialog_and_the_nonce() -> None:
    sub = new_sub()
    subscribed(sub)
    assert sub.timer(100.0) == []
    refresh = only(sub.timer(540.0))
    assert sub.state is SubState.REFRESHING and refresh.call_id == sub.call_id
    assert refresh.header("to") == "<sip:1001@127.0.0.1>;tag=pbx-tag"
    assert "nc=00000002" in (refresh.header("authorization") or "")
    sub.receive(answer(refresh, 200, "Expires: 600"), 540.1)
    assert sub.state is SubState.ACTIVE


def test_retransmits_then_times_out_and_backs_off() -> None:
    sub = new_sub()
    first = sub.start(0.0)
    sent = [t for t in (0.5, 1.5, 3.5, 7.5) if sub.timer(t) == first]
    assert sent == [0.5, 1.5, 3.5, 7.5]  # T1 doubling up to T2 (4 s)
    assert sub.timer(8.0) == [] and sub.state is SubState.WAITING and sub.reason == "timeout"
    deadline = sub.next_deadline()
    assert deadline is not None and 8.8 <= deadline <= 9.2
    again = only(sub.timer(deadline))
    assert again.call_id != parse_message(first[0].data).call_id  # a new subscription


def test_wrong_password_is_auth_failed_not_a_loop() -> None:
    sub = new_sub()
    first = only(sub.start(0.0))
    second = only(sub.receive(answer(first, 401, f"WWW-Authenticate: {CHALLENGE}"), 0.0).outgoing)
    step = sub.receive(
        answer(second, 401, f"WWW-Authenticate: {CHALLENGE.replace('n-1', 'n-2')}"), 0.1
    )
    assert step.outgoing == [] and sub.state is SubState.WAITING and sub.reason == "auth_failed"
    assert (sub.next_deadline() or 0) >= 15.0


def test_rejection_and_terminated_notifies() -> None:
    sub = new_sub()
    first = only(sub.start(0.0))
    sub.receive(answer(first, 404), 0.0)
    assert sub.state is SubState.WAITING and sub.reason == "rejected_404"
    sub = new_sub()
    subscribed(sub)
    old = sub.call_id
    step = sub.receive(notify(sub, "terminated;reason=timeout"), 5.0)
    assert parse_message(step.outgoing[0].data).status_code == 200
    assert parse_message(step.outgoing[1].data).method == "SUBSCRIBE" and sub.call_id != old
    sub = new_sub()
    subscribed(sub)
    sub.receive(notify(sub, "terminated;reason=noresource"), 5.0)
    assert sub.state is SubState.WAITING and (sub.next_deadline() or 0) >= 65.0
    sub = new_sub()
    subscribed(sub)
    sub.receive(notify(sub, "terminated;reason=probation;retry-after=7"), 5.0)
    assert sub.next_deadline() == 12.0


def test_refresh_481_starts_over_and_stop_unsubscribes() -> None:
    sub = new_sub()
    subscribed(sub)
    refresh = only(sub.timer(540.0))
    step = sub.receive(answer(refresh, 481), 540.1)
    assert step.new_dialog and only(step.outgoing).header("authorization") is None
    sub = new_sub()
    subscribed(sub)
    bye = only(sub.stop(10.0))
    assert bye.header("expires") == "0" and sub.state is SubState.STOPPED
    late = sub.receive(notify(sub, "terminated"), 10.1)
    assert parse_message(late.outgoing[0].data).status_code == 481


def test_bad_settings_and_extensions() -> None:
    with pytest.raises(SubscriptionError):
        Subscription("10 01", SETTINGS)
    with pytest.raises(SubscriptionError):
        SubscriptionSettings(("h", 1), ("h", 2), DigestCredentials("u", "p"), "d", expires=5)


def test_the_transition_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(SubState)
    # Every state but `idle` is reached, and `stopped` is left by nothing but `stop`.
    assert {target for moves in TRANSITIONS.values() for target in moves.values()} == set(
        SubState
    ) - {SubState.IDLE}
    assert all(TRANSITIONS[state][SubEvent.STOP] is SubState.STOPPED for state in SubState)
    assert dict(TRANSITIONS[SubState.STOPPED]) == {SubEvent.STOP: SubState.STOPPED}
    assert {event for moves in TRANSITIONS.values() for event in moves} == set(SubEvent)


def test_an_illegal_move_is_refused_and_changes_nothing() -> None:
    sub = new_sub()
    subscribed(sub)
    before = (sub.call_id, sub.local_tag, sub.cseq, sub.next_deadline())
    with pytest.raises(SubscriptionStateError) as refused:
        sub.start(1.0)  # a second SUBSCRIBE dialog while the first one is active
    assert isinstance(refused.value, SubscriptionError)
    assert (refused.value.state, refused.value.event) == (SubState.ACTIVE, SubEvent.START)
    assert sub.state is SubState.ACTIVE
    assert (sub.call_id, sub.local_tag, sub.cseq, sub.next_deadline()) == before
    sub.stop(2.0)
    with pytest.raises(SubscriptionStateError):
        sub.start(3.0)  # stopped is final
    assert sub.state is SubState.STOPPED and sub.stop(4.0) == []
