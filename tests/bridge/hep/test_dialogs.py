"""Dialog tracking, the phone directory and de-duplication, message by message."""

from __future__ import annotations

import pytest

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.hep.dedup import Deduplicator, bottom_via_branch, message_key
from bridge.hep.dialogs import DialogTracker
from bridge.hep.directory import PhoneDirectory
from bridge.hep.legs import (
    DialogChange,
    HoldChanged,
    LegAnswered,
    LegEnded,
    LegRinging,
    LegRole,
    LegStarted,
    LegState,
    ReferAnswered,
    ReferNotified,
    ReferSent,
)
from bridge.hep.tracker import SipTracker
from bridge.model import CallState, ConsultState, FailureCause, ProofGrade, ReferState, TransferKind
from bridge.sip import SipMessage, parse_message
from bridge.uris import uri_of_header, user_of_uri

T0 = 1795604742.0
AGENT = "sip:1001@pbx.example"
PHONES = PhoneDirectory([AGENT, "sip:1002@pbx.example"], match_user=True)
SDP = "v=0\no=- 1 1 IN IP4 10.0.0.11\ns=-\nc=IN IP4 {addr}\nt=0 0\nm=audio 4000 RTP/AVP 0\n{attr}"


def sdp(direction: str = "sendrecv", addr: str = "10.0.0.11") -> str:
    return SDP.format(addr=addr, attr=f"a={direction}\n" if direction else "")


def sip(
    start: str,
    cseq: str,
    frm: str,
    to: str,
    *extra: str,
    call_id: str = "call-1",
    branch: str = "z9hG4bK-1",
    body: str = "",
) -> SipMessage:
    """A message from its start line and the headers that differ; SDP bodies get their type."""
    lines = [
        start,
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}",
        f"From: {frm}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        *extra,
    ]
    payload = body.replace("\n", "\r\n").encode()
    if body and not any(x.lower().startswith("content-type") for x in extra):
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(payload)}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)


PHONE = "<sip:1001@10.0.0.11>"
CUSTOMER = '"Customer" <sip:2001@pbx>'
PHONE_CONTACT = "Contact: <sip:1001@10.0.0.11:5060>"
PBX_CONTACT = "Contact: <sip:asterisk@10.0.0.2:5060>"


def outgoing_call(
    tracker: DialogTracker, call_id: str = "call-1", at: float = T0
) -> list[DialogChange]:
    """The phone calls 2001 through the PBX and gets ringing then an answer."""
    frm, to = f"{PHONE};tag=ph", "<sip:2001@pbx>"
    out = tracker.feed(
        sip("INVITE sip:2001@pbx SIP/2.0", "1 INVITE", frm, to, PHONE_CONTACT, call_id=call_id),
        at,
    )
    for code in ("180 Ringing", "200 OK"):
        msg = sip(f"SIP/2.0 {code}", "1 INVITE", frm, f"{to};tag=px", call_id=call_id)
        out += tracker.feed(msg, at + 1)
    return out


def incoming_invite(call_id: str = "call-1", *extra: str) -> SipMessage:
    return sip(
        "INVITE sip:1001@10.0.0.11 SIP/2.0",
        "10 INVITE",
        f"{CUSTOMER};tag=cu",
        PHONE,
        PBX_CONTACT,
        *extra,
        call_id=call_id,
    )


def answer(code: str, contact: str = PHONE_CONTACT, call_id: str = "call-1") -> SipMessage:
    return sip(
        f"SIP/2.0 {code}",
        "10 INVITE",
        f"{CUSTOMER};tag=cu",
        f"{PHONE};tag=ph",
        contact,
        call_id=call_id,
    )


def kinds(changes: list[DialogChange]) -> list[str]:
    return [type(c).__name__ for c in changes]


class TestPhoneDirectory:
    def test_exact_match_by_user_and_host(self) -> None:
        d = PhoneDirectory(["sip:1001@PBX.example:5060"])
        assert d.match_header('"Ana" <sip:1001@pbx.example;transport=udp>;tag=x') == (
            "sip:1001@PBX.example:5060"
        )
        assert d.match_header("sip:1001@pbx.example;tag=x") == "sip:1001@PBX.example:5060"
        assert d.match_header("<sip:1001@10.0.0.2>") is None
        assert d.match_header("<sip:1002@pbx.example>") is None
        assert d.match_header(None) is None

    def test_user_only_match_when_unambiguous(self) -> None:
        d = PhoneDirectory(["sip:1001@pbx.example", "sip:1002@a", "sip:1002@b"], match_user=True)
        assert d.match_uri("sip:1001@10.0.0.11:5060;ob") == "sip:1001@pbx.example"
        assert d.match_uri("sip:1002@10.0.0.12") is None  # two phones have user 1002
        assert d.match_uri("sip:1002@b") == "sip:1002@b"  # exact still works
        assert d.match_uri("sip:10.0.0.2") is None

    def test_update(self) -> None:
        d = PhoneDirectory(["sip:1001@pbx.example"], match_user=True)
        d.add("sip:1003@pbx.example")
        assert len(d) == 2 and "sip:1003@PBX.example" in d
        assert d.user_of("sip:1003@pbx.example") == "1003"
        d.remove("sip:1001@pbx.example:5060")
        assert d.phones == ["sip:1003@pbx.example"]
        assert d.match_uri("sip:1001@x") is None
        d.replace([])
        assert len(d) == 0

    @pytest.mark.parametrize(
        ("header", "user"),
        [
            ('"A, B" <sip:1001@pbx>;tag=1', "1001"),
            ("sip:1001:secret@pbx;tag=1", "1001"),
            ("<tel:+34900000001;phone-context=x>", "+34900000001"),
            ("<sip:%2B34900@pbx>", "+34900"),
            ("<sip:pbx.example>", None),
            ("<http://x>", None),
        ],
    )
    def test_user_part(self, header: str, user: str | None) -> None:
        assert user_of_uri(uri_of_header(header)) == user


class TestDedup:
    REQUEST = (
        "NOTIFY sip:1001@10.0.0.11 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.21:5060;branch=z9hG4bKuac\r\n"
        "From: <sip:2001@p>;tag=a\r\nTo: <sip:1001@p>;tag=b\r\nCall-ID: c\r\n"
        "CSeq: 2 NOTIFY\r\nContent-Length: 0\r\n\r\n"
    )

    def test_proxy_copy_has_the_same_key(self) -> None:
        received = parse_message(self.REQUEST.encode())
        forwarded = parse_message(
            self.REQUEST.replace(
                "Via:",
                "Via: SIP/2.0/UDP 10.0.0.40:5090;branch=z9hG4bKproxy\r\n"
                "Record-Route: <sip:10.0.0.40;lr>\r\nVia:",
                1,
            ).encode()
        )
        assert forwarded.via_branch == "z9hG4bKproxy"
        assert message_key(received) == message_key(forwarded)
        assert message_key(received) == ("c", 2, "NOTIFY", 0, "z9hG4bKuac")

    def test_bottom_via_in_a_comma_list_and_odd_spelling(self) -> None:
        text = self.REQUEST.replace(
            "Via: SIP/2.0/UDP 10.0.0.21:5060;branch=z9hG4bKuac",
            'Via: SIP/2.0/UDP p:5090;branch=top, SIP/2.0/UDP 10.0.0.21 ;x="a;b" ;BRANCH=z9hG4bKuac',
        )
        assert bottom_via_branch(parse_message(text.encode())) == "z9hG4bKuac"

    def test_responses_and_acks_differ(self) -> None:
        frm, to = "<sip:a@p>;tag=1", "<sip:b@p>;tag=2"
        ringing = sip("SIP/2.0 180 Ringing", "1 INVITE", frm, to)
        ok = sip("SIP/2.0 200 OK", "1 INVITE", frm, to)
        ack = sip("ACK sip:b@p SIP/2.0", "1 ACK", frm, to)
        assert len({message_key(ringing), message_key(ok), message_key(ack)}) == 3

    def test_window_expiry_and_cap(self) -> None:
        dedup = Deduplicator(window=32.0, max_entries=3)
        key = message_key(parse_message(self.REQUEST.encode()))
        assert not dedup.seen(key, T0)
        assert dedup.seen(key, T0 + 31)
        assert dedup.next_deadline() == T0 + 32
        dedup.expire(T0 + 31.9)
        assert len(dedup) == 1
        dedup.expire(T0 + 32)
        assert len(dedup) == 0 and dedup.next_deadline() is None
        assert not dedup.seen(key, T0 + 40)
        assert not dedup.seen(key, T0 + 80)  # outside the window: a new message
        for n in range(5):
            dedup.seen(key._replace(cseq=n + 10), T0 + 80)
        assert len(dedup) <= 3


class TestCallLegs:
    def test_outgoing_call_life(self) -> None:
        tracker = DialogTracker(PHONES)
        out = outgoing_call(tracker)
        assert kinds(out) == ["LegStarted", "LegRinging", "LegAnswered"]
        (leg,) = tracker.legs("call-1")
        assert (leg.phone, leg.outgoing, leg.remote) == (AGENT, True, "2001")
        assert (leg.phone_tag, leg.remote_tag, leg.state) == ("ph", "px", LegState.CONFIRMED)
        bye = sip("BYE sip:x SIP/2.0", "5 BYE", "<sip:2001@pbx>;tag=px", f"{PHONE};tag=ph")
        (ended,) = tracker.feed(bye, T0 + 9)
        assert ended == LegEnded(leg, LegState.CONFIRMED, False, "bye", None)
        assert tracker.feed(bye, T0 + 9) == []  # a second BYE ends nothing

    def test_auth_challenge_is_not_an_end(self) -> None:
        tracker = DialogTracker(PHONES)
        frm, to = f"{PHONE};tag=ph", "<sip:2001@pbx>"
        invite = "INVITE sip:2001@pbx SIP/2.0"
        out = tracker.feed(sip(invite, "1 INVITE", frm, to, PHONE_CONTACT), T0)
        out += tracker.feed(sip("SIP/2.0 401 Unauthorized", "1 INVITE", frm, f"{to};tag=x"), T0)
        out += tracker.feed(sip(invite, "2 INVITE", frm, to, PHONE_CONTACT, branch="b2"), T0)
        out += tracker.feed(sip("SIP/2.0 200 OK", "2 INVITE", frm, f"{to};tag=px"), T0 + 1)
        assert kinds(out) == ["LegStarted", "LegAnswered"]

    def test_incoming_leg_counts_once_the_phone_answers(self) -> None:
        tracker = DialogTracker(PHONES)
        pai = 'P-Asserted-Identity: "Customer" <tel:+34900000001>'
        assert tracker.feed(incoming_invite("call-1", pai), T0) == []
        out = tracker.feed(answer("180 Ringing"), T0 + 0.1)
        assert kinds(out) == ["LegStarted", "LegRinging"]
        (leg,) = tracker.legs("call-1")
        assert (leg.outgoing, leg.remote, leg.remote_tag) == (False, "+34900000001", "cu")
        assert kinds(tracker.feed(answer("200 OK"), T0 + 2)) == ["LegAnswered"]
        assert leg.phone_tag == "ph"

    def test_cancelled_incoming_call(self) -> None:
        tracker = DialogTracker(PHONES)
        tracker.feed(incoming_invite(), T0)
        tracker.feed(answer("180 Ringing"), T0)
        cancel = sip("CANCEL sip:1001@x SIP/2.0", "10 CANCEL", f"{CUSTOMER};tag=cu", PHONE)
        (ended,) = tracker.feed(cancel, T0 + 3)
        assert isinstance(ended, LegEnded)
        assert (ended.prior, ended.by_phone, ended.cause) == (LegState.EARLY, False, "cancel")
        assert tracker.feed(answer("487 Request Terminated"), T0 + 3) == []

    def test_rejected_unverified_leg_leaves_nothing(self) -> None:
        tracker = DialogTracker(PHONES)
        tracker.feed(incoming_invite(), T0)
        assert tracker.feed(answer("486 Busy Here", ""), T0) == []
        assert len(tracker) == 0

    def test_unrelated_messages(self) -> None:
        tracker = DialogTracker(PHONES)
        options = sip("OPTIONS sip:pbx SIP/2.0", "1 OPTIONS", "<sip:1001@pbx>;tag=o", "<sip:pbx>")
        assert not tracker.may_concern(options)
        other = sip("INVITE sip:3001@pbx SIP/2.0", "1 INVITE", "<sip:3000@p>;tag=a", "<sip:3001@p>")
        assert tracker.feed(other, T0) == [] and tracker.unmatched == 1


class TestHold:
    def reinvite(self, direction: str, cseq: int, *, by_phone: bool = True) -> SipMessage:
        frm, to = f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px"
        if not by_phone:
            frm, to = to, frm
        return sip(
            "INVITE sip:x SIP/2.0",
            f"{cseq} INVITE",
            frm,
            to,
            PHONE_CONTACT,
            branch=f"re{cseq}",
            body=sdp(direction) if direction else "",
        )

    def answer(
        self, code: str, cseq: int, direction: str = "", *, by_phone: bool = True
    ) -> SipMessage:
        frm, to = f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px"
        if not by_phone:
            frm, to = to, frm
        body = sdp(direction) if direction else ""
        return sip(f"SIP/2.0 {code}", f"{cseq} INVITE", frm, to, branch=f"re{cseq}", body=body)

    def test_hold_and_resume(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        (leg,) = tracker.legs("call-1")
        assert tracker.feed(self.reinvite("sendonly", 2), T0 + 5) == []
        assert tracker.feed(self.answer("200 OK", 2, "recvonly"), T0 + 5) == [
            HoldChanged(leg, True)
        ]
        # A session refresh while held changes nothing.
        tracker.feed(self.reinvite("sendonly", 3), T0 + 6)
        assert tracker.feed(self.answer("200 OK", 3, "recvonly"), T0 + 6) == []
        # A refused resume changes nothing; the retried one does.
        tracker.feed(self.reinvite("sendrecv", 4), T0 + 7)
        assert tracker.feed(self.answer("491 Request Pending", 4), T0 + 7) == []
        tracker.feed(self.reinvite("sendrecv", 5), T0 + 8)
        assert tracker.feed(self.answer("200 OK", 5, "sendrecv"), T0 + 8) == [
            HoldChanged(leg, False)
        ]

    def test_old_style_hold_and_remote_hold(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        (leg,) = tracker.legs("call-1")
        held = sip(
            "INVITE sip:x SIP/2.0",
            "2 INVITE",
            f"{PHONE};tag=ph",
            "<sip:2001@pbx>;tag=px",
            branch="old",
            body=SDP.format(addr="0.0.0.0", attr=""),
        )
        tracker.feed(held, T0 + 5)
        ok = sip(
            "SIP/2.0 200 OK", "2 INVITE", f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px", branch="old"
        )
        assert tracker.feed(ok, T0 + 5) == [HoldChanged(leg, True)]
        # The customer's side takes it off hold with its own re-INVITE (late-offer answer only).
        tracker.feed(self.reinvite("", 7, by_phone=False), T0 + 9)
        out = tracker.feed(self.answer("200 OK", 7, "sendrecv", by_phone=False), T0 + 9)
        assert out == [HoldChanged(leg, False)]


class TestConsult:
    def test_second_outgoing_call_consults_the_held_call(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker, "first")
        outgoing_call(tracker, "second")
        first, second = tracker.legs("first")[0], tracker.legs("second")[0]
        assert second.role is LegRole.CONSULT and second.customer is first
        # A third call while the first is held and the second is up consults the held one.
        first.held = True
        second.role, second.customer, first.consult = LegRole.CALL, None, None
        outgoing_call(tracker, "third")
        third = tracker.legs("third")[0]
        assert third.customer is first and first.consult is third

    def test_incoming_second_call_is_not_a_consult(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker, "first")
        tracker.feed(incoming_invite("second"), T0 + 5)
        tracker.feed(answer("200 OK", call_id="second"), T0 + 6)
        assert tracker.legs("second")[0].role is LegRole.CALL


def refer(
    cseq: int, refer_to: str, *extra: str, branch: str = "rf", call_id: str = "call-1"
) -> SipMessage:
    return sip(
        "REFER sip:asterisk@pbx SIP/2.0",
        f"{cseq} REFER",
        f"{PHONE};tag=ph",
        "<sip:2001@pbx>;tag=px",
        PHONE_CONTACT,
        f"Refer-To: {refer_to}",
        *extra,
        branch=branch,
        call_id=call_id,
    )


def refer_answer(code: str, cseq: int, branch: str = "rf", call_id: str = "call-1") -> SipMessage:
    frm, to = f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px"
    return sip(f"SIP/2.0 {code}", f"{cseq} REFER", frm, to, branch=branch, call_id=call_id)


def notify(
    cseq: int, frag: str, state: str = "active", event: str = "refer", call_id: str = "call-1"
) -> SipMessage:
    return sip(
        "NOTIFY sip:1001@10.0.0.11 SIP/2.0",
        f"{cseq} NOTIFY",
        "<sip:2001@pbx>;tag=px",
        f"{PHONE};tag=ph",
        f"Event: {event}",
        f"Subscription-State: {state}",
        "Content-Type: message/sipfrag",
        branch=f"n{cseq}",
        body=frag + "\n",
        call_id=call_id,
    )


class TestRefer:
    def test_refer_answer_and_notifies(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        (leg,) = tracker.legs("call-1")
        (sent,) = tracker.feed(refer(7, "<sip:1002@pbx>"), T0 + 5)
        assert isinstance(sent, ReferSent)
        r = sent.refer
        assert (r.id, r.kind, r.target, r.subscribed) == ("7", TransferKind.BLIND, "1002", True)
        assert tracker.feed(refer_answer("100 Trying", 7), T0 + 5) == []
        assert tracker.feed(refer_answer("202 Accepted", 7), T0 + 5) == [
            ReferAnswered(leg, r, 202, "SIP/2.0 202 Accepted")
        ]
        assert tracker.feed(notify(20, "SIP/2.0 100 Trying"), T0 + 6) == [
            ReferNotified(leg, r, 100, "SIP/2.0 100 Trying")
        ]
        assert tracker.feed(notify(21, "SIP/2.0 180 Ringing"), T0 + 6) == []  # still trying
        assert tracker.feed(notify(22, "SIP/2.0 200 OK", "terminated"), T0 + 9) == [
            ReferNotified(leg, r, 200, "SIP/2.0 200 OK")
        ]
        assert tracker.feed(notify(23, "SIP/2.0 503 Service Unavailable"), T0 + 9) == []
        assert r.state is ReferState.SUCCEEDED and not r.active

    def test_other_event_packages_are_ignored(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        tracker.feed(refer(7, "<sip:1002@pbx>"), T0 + 5)
        assert tracker.feed(notify(20, "SIP/2.0 200 OK", event="dialog"), T0 + 6) == []

    def test_challenged_refer_is_sent_again(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        out = tracker.feed(refer(7, "<sip:1002@pbx>"), T0 + 5)
        out += tracker.feed(refer_answer("407 Proxy Authentication Required", 7), T0 + 5)
        out += tracker.feed(refer(8, "<sip:1002@pbx>", branch="rf2"), T0 + 5)
        out += tracker.feed(refer_answer("202 Accepted", 8, "rf2"), T0 + 5)
        assert kinds(out) == ["ReferSent", "ReferSent", "ReferAnswered"]

    def test_notify_before_its_refer(self) -> None:
        tracker = DialogTracker(PHONES)
        outgoing_call(tracker)
        early = tracker.feed(notify(20, "SIP/2.0 100 Trying"), T0 + 5)
        assert kinds(early) == ["ReferNotified"]
        (sent,) = tracker.feed(
            refer(7, "<sip:1002@pbx?Replaces=k%3Bto-tag%3Da%3Bfrom-tag%3Db>"), T0
        )
        assert isinstance(sent, ReferSent)
        assert sent.refer.kind is TransferKind.ATTENDED and sent.refer.state is ReferState.TRYING
        assert sent.refer.replaces is not None and sent.refer.replaces.call_id == "k"

    def test_refer_in_a_dialog_begun_before_we_watched(self) -> None:
        tracker = DialogTracker(PHONES)
        out = tracker.feed(refer(7, "sip:1002@pbx", "Refer-Sub: false"), T0)
        assert kinds(out) == ["ReferSent"]
        (leg,) = tracker.legs("call-1")
        assert (leg.state, leg.remote, leg.phone_tag) == (LegState.CONFIRMED, "2001", "ph")
        assert isinstance(out[0], ReferSent) and out[0].refer.subscribed is False


class TestExpiry:
    def test_linger_after_bye_then_gone(self) -> None:
        tracker = DialogTracker(PHONES, linger=32.0)
        outgoing_call(tracker)
        bye = sip("BYE sip:x SIP/2.0", "2 BYE", f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px")
        tracker.feed(bye, T0 + 10)
        assert tracker.expire(T0 + 41) == []
        assert len(tracker) == 1
        (gone,) = tracker.expire(T0 + 42)
        assert gone.call_id == "call-1" and len(tracker) == 0
        assert tracker.next_deadline() is None

    def test_longer_linger_while_a_refer_awaits_notifies(self) -> None:
        tracker = DialogTracker(PHONES, linger=32.0, refer_linger=180.0)
        outgoing_call(tracker)
        tracker.feed(refer(7, "<sip:1002@pbx>"), T0 + 5)
        bye = sip("BYE sip:x SIP/2.0", "8 BYE", f"{PHONE};tag=ph", "<sip:2001@pbx>;tag=px")
        tracker.feed(bye, T0 + 6)  # the transferor hangs up right after the REFER
        tracker.expire(T0 + 100)
        assert len(tracker) == 1
        assert kinds(tracker.feed(notify(20, "SIP/2.0 200 OK", "terminated"), T0 + 100)) == [
            "ReferNotified"
        ]
        tracker.expire(T0 + 187)
        assert len(tracker) == 0

    def test_idle_and_unanswered_limits(self) -> None:
        tracker = DialogTracker(PHONES, setup_max=300.0, idle_max=4 * 3600.0)
        outgoing_call(tracker, "answered")
        tracker.feed(incoming_invite("never-answered"), T0)
        assert tracker.next_deadline() == T0 + 300
        tracker.expire(T0 + 301)
        assert len(tracker) == 1  # the confirmed call: idle for 4 h only
        deadline = tracker.next_deadline()
        assert deadline is not None and deadline == T0 + 1 + 4 * 3600
        tracker.expire(deadline)
        assert len(tracker) == 0


class TestTransferEdgeCases:
    """Small flows through SipTracker for cases the recorded flows do not cover."""

    def observations(self, *messages: tuple[SipMessage, float]) -> list[Observation]:
        tracker = SipTracker(PHONES, "test")
        out: list[Observation] = []
        for msg, at in messages:
            out += [e.evidence.observation for e in tracker.feed(msg, at)]
        return out

    def test_no_subscription_refer_and_pbx_bye_prove_nothing(self) -> None:
        tracker = SipTracker(PHONES, "test")
        dialogs = tracker.dialogs
        outgoing_call(dialogs)
        out = tracker.feed(refer(7, "sip:1002@pbx", "Refer-Sub: false"), T0 + 5)
        out += tracker.feed(refer_answer("200 OK", 7), T0 + 5)
        bye = sip("BYE sip:x SIP/2.0", "9 BYE", "<sip:2001@pbx>;tag=px", f"{PHONE};tag=ph")
        out += tracker.feed(bye, T0 + 8)
        assert [e.evidence.observation for e in out] == [
            TransferRequested(TransferKind.BLIND, "1002"),
            TransferProgressed(ReferState.ACCEPTED),
            CallStateChanged(CallState.ENDED),
        ]

    def test_customer_hangs_up_before_the_refer_is_answered(self) -> None:
        tracker = SipTracker(PHONES, "test")
        outgoing_call(tracker.dialogs)
        out = tracker.feed(refer(7, "sip:1002@pbx"), T0 + 5)
        bye = sip("BYE sip:x SIP/2.0", "9 BYE", "<sip:2001@pbx>;tag=px", f"{PHONE};tag=ph")
        out += tracker.feed(bye, T0 + 5.1)
        assert [e.evidence.observation for e in out][1:] == [
            TransferFailed("customer_hung_up", None, FailureCause.CUSTOMER_HUNG_UP),
            CallStateChanged(CallState.ENDED),
        ]

    def test_call_pickup_with_replaces_is_not_a_transfer(self) -> None:
        tracker = SipTracker(PHONES, "test")
        tracker.feed(incoming_invite("ringing"), T0)
        tracker.feed(answer("180 Ringing", call_id="ringing"), T0)
        pickup = sip(
            "INVITE sip:2001@pbx SIP/2.0",
            "1 INVITE",
            "<sip:1009@pbx>;tag=pk",
            "<sip:2001@pbx>",
            "Replaces: ringing;to-tag=ph;from-tag=cu",
            call_id="pickup",
            branch="pk",
        )
        tracker.feed(pickup, T0 + 1)
        ok = sip(
            "SIP/2.0 200 OK",
            "1 INVITE",
            "<sip:1009@pbx>;tag=pk",
            "<sip:2001@pbx>;tag=z",
            call_id="pickup",
            branch="pk",
        )
        assert tracker.feed(ok, T0 + 1) == []

    def test_refer_sent_in_the_consult_dialog(self) -> None:
        tracker = SipTracker(PHONES, "test")
        outgoing_call(tracker.dialogs, "customer")
        outgoing_call(tracker.dialogs, "consult")
        msg = sip(
            "REFER sip:x SIP/2.0",
            "3 REFER",
            f"{PHONE};tag=ph",
            "<sip:2001@pbx>;tag=px",
            "Refer-To: <sip:2001@pbx?Replaces=customer%3Bto-tag%3Dpx%3Bfrom-tag%3Dph>",
            call_id="consult",
            branch="rc",
        )
        (event,) = tracker.feed(msg, T0 + 5)
        assert event.call_id == "customer"
        assert event.evidence.observation == TransferRequested(TransferKind.ATTENDED, "2001")
        invite = sip(
            "INVITE sip:2001@pbx SIP/2.0",
            "1 INVITE",
            "<sip:1002@pbx>;tag=t",
            "<sip:2001@pbx>",
            "Replaces: customer;to-tag=px;from-tag=ph",
            call_id="new",
            branch="nw",
        )
        tracker.feed(invite, T0 + 6)
        ok = sip(
            "SIP/2.0 200 OK",
            "1 INVITE",
            "<sip:1002@pbx>;tag=t",
            "<sip:2001@pbx>;tag=c",
            call_id="new",
            branch="nw",
        )
        done, target = tracker.feed(ok, T0 + 6)
        assert target.phone == "sip:1002@pbx.example"  # the target's own new call
        assert target.evidence.observation == CallStateChanged(CallState.CONNECTED)
        assert (done.phone, done.call_id) == (AGENT, "customer")
        # The consult (where the REFER was sent) had been answered: its replacement is proof.
        expected = TransferSucceeded("dialog_replaced", None, ProofGrade.CONSULT_REPLACED)
        assert done.evidence.observation == expected


def test_changes_point_at_their_leg() -> None:
    tracker = DialogTracker(PHONES)
    out = outgoing_call(tracker)
    (leg,) = tracker.legs("call-1")
    assert out == [LegStarted(leg), LegRinging(leg, 180), LegAnswered(leg)]


def test_consult_ended_during_a_refer_that_then_fails_is_reported_ended() -> None:
    tracker = SipTracker(PHONES, "test")
    outgoing_call(tracker.dialogs, "customer")
    outgoing_call(tracker.dialogs, "consult")
    replaces = "<sip:1002@pbx?Replaces=consult%3Bto-tag%3Dpx%3Bfrom-tag%3Dph>"
    out = tracker.feed(refer(7, replaces, call_id="customer"), T0)
    bye = sip(
        "BYE sip:x SIP/2.0",
        "9 BYE",
        "<sip:2001@pbx>;tag=px",
        f"{PHONE};tag=ph",
        call_id="consult",
        branch="kb",
    )
    out += tracker.feed(bye, T0 + 1)  # part of the transfer, so far: not reported
    out += tracker.feed(refer_answer("202 Accepted", 7, call_id="customer"), T0 + 1)
    failed = notify(20, "SIP/2.0 500 Server Internal Error", "terminated", call_id="customer")
    out += tracker.feed(failed, T0 + 2)
    assert [(e.call_id, e.evidence.observation) for e in out] == [
        ("customer", TransferRequested(TransferKind.ATTENDED, "1002")),
        ("customer", TransferProgressed(ReferState.ACCEPTED)),
        ("customer", TransferFailed("notify_failure", "SIP/2.0 500 Server Internal Error")),
        ("customer", ConsultChanged(ConsultState.ENDED, "2001")),
    ]
