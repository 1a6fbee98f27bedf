"""Recorded-shape call flows through SipTracker: the exact evidence each agent's desktop gets.

Flows live in tests/fixtures/flows/*.txt: SIP messages separated by ``=== <seconds> <note>``
lines, stored with LF and sent with CRLF, Content-Length filled in by the loader.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    TransferFailed,
    TransferProgressed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.hep.directory import PhoneDirectory
from bridge.hep.tracker import SipTracker
from bridge.model import (
    Action,
    Call,
    CallState,
    ConfirmedBy,
    ConsultState,
    Customer,
    FailureCause,
    ProofGrade,
    ReferState,
    Session,
    SessionStatus,
    TransferKind,
    TransferState,
)
from bridge.session.machine import desktop_step
from bridge.session.phone import apply_evidence
from bridge.timefmt import rfc3339

FLOWS = Path(__file__).resolve().parents[2] / "fixtures" / "flows"
T0 = 1795604742.0  # 2026-11-25T11:05:42Z
A1001 = "sip:1001@pbx.example"
A1002 = "sip:1002@pbx.example"
PBX_PHONES = PhoneDirectory([A1001, A1002], match_user=True)

RINGING = CallStateChanged(CallState.RINGING)
CONNECTED = CallStateChanged(CallState.CONNECTED)
ON_HOLD = CallStateChanged(CallState.ON_HOLD)
ENDED = CallStateChanged(CallState.ENDED)
ACCEPTED = TransferProgressed(ReferState.ACCEPTED)
TRYING = TransferProgressed(ReferState.TRYING, "SIP/2.0 100 Trying")
# Blind: the PBX's 2xx NOTIFY is only its report; the proof is the target's leg answering.
NOTIFY_REPORT = TransferReported("notify_2xx", "SIP/2.0 200 OK")
TARGET_OK = TransferSucceeded("target_leg_answered", None, ProofGrade.TARGET_ANSWERED)
# Attended with an answered consult: the 2xx NOTIFY is proof of the replaced consult.
CONSULT_OK = TransferSucceeded(
    "notify_2xx_consult_answered", "SIP/2.0 200 OK", ProofGrade.CONSULT_REPLACED
)
BUSY = "SIP/2.0 486 Busy Here"


def consult(state: ConsultState, target: str = "1002") -> ConsultChanged:
    return ConsultChanged(state, target)


@dataclass(frozen=True)
class Captured:
    """One captured datagram."""

    at: float
    data: bytes
    note: str


def to_wire(text: str) -> bytes:
    """LF text to a CRLF datagram with a correct Content-Length."""
    lines = text.strip("\n").split("\n")
    if "" in lines:
        blank = lines.index("")
        head, body = lines[:blank], lines[blank + 1 :]
    else:
        head, body = lines, []
    while body and not body[-1]:
        body.pop()
    payload = "".join(f"{line}\r\n" for line in body).encode()
    head = [line for line in head if not line.lower().startswith("content-length:")]
    head.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def load_flow(name: str) -> list[Captured]:
    """The messages of ``tests/fixtures/flows/<name>.txt`` with their capture times."""
    text = (FLOWS / f"{name}.txt").read_text(encoding="utf-8")
    out = []
    for block in re.split(r"^=== ", text, flags=re.M)[1:]:
        header, _, message = block.partition("\n")
        offset, _, note = header.partition(" ")
        out.append(Captured(T0 + float(offset), to_wire(message), note.strip()))
    return out


def proxy_copy(data: bytes) -> bytes:
    """The copy Kamailio's siptrace sends as forwarded: its own Via on top, a Record-Route."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    branch = hashlib.sha1(data).hexdigest()[:16].encode()
    extra = [b"Via: SIP/2.0/UDP 192.168.50.40:5090;branch=z9hG4bK" + branch]
    if not lines[0].startswith(b"SIP/2.0"):
        extra.append(b"Record-Route: <sip:192.168.50.40:5090;lr>")
    return b"\r\n".join([lines[0], *extra, *lines[1:]]) + b"\r\n\r\n" + body


def run(
    messages: list[Captured], directory: PhoneDirectory = PBX_PHONES
) -> tuple[SipTracker, list[PhoneEvent]]:
    tracker = SipTracker(directory, "hep")
    events: list[PhoneEvent] = []
    for captured in messages:
        new = tracker.feed_bytes(captured.data, captured.at)
        assert all(e.evidence.at == rfc3339(captured.at) for e in new)
        events += new
    return tracker, events


def seen_by(events: list[PhoneEvent], phone: str) -> list[Observation]:
    return [e.evidence.observation for e in events if e.phone == phone]


def calls_of(events: list[PhoneEvent], phone: str) -> set[tuple[str | None, str | None]]:
    return {(e.call_id, e.remote) for e in events if e.phone == phone}


BLIND_1001 = [
    RINGING,
    CONNECTED,
    TransferRequested(TransferKind.BLIND, "1002"),
    ACCEPTED,
    TRYING,
    TARGET_OK,  # the PBX's leg to 1002, carrying the customer, answered
    NOTIFY_REPORT,
    ENDED,
]


class TestThroughPbx:
    def test_blind_transfer(self) -> None:
        tracker, events = run(load_flow("blind_pbx"))
        assert seen_by(events, A1001) == BLIND_1001
        # Consult and REFER evidence is about the agent's leg with the customer.
        assert calls_of(events, A1001) == {("a1-agent-leg-blind", "2001")}
        # The target's own phone sees the customer (P-Asserted-Identity) ringing and answered.
        assert seen_by(events, A1002) == [RINGING, CONNECTED]
        assert calls_of(events, A1002) == {("t1-target-leg-blind", "2001")}
        assert {e.evidence.source for e in events} == {"hep"}
        assert events[0].evidence.at == "2026-11-25T11:05:42.140Z"
        # The customer's own leg to the PBX is addressed to 1001 but answered by the PBX.
        assert not any(e.call_id == "c0-customer-leg@192.168.50.21" for e in events)
        stats = tracker.stats
        assert stats.messages == 22 and stats.duplicates == 0 and stats.dropped == 0
        assert stats.events == len(events) == 10

    def test_blind_transfer_to_a_busy_target_fails(self) -> None:
        _, events = run(load_flow("blind_busy_pbx"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            TransferRequested(TransferKind.BLIND, "1002"),
            ACCEPTED,
            TRYING,
            # The PBX's leg to 1002 answered 486 first, then its NOTIFY said the same.
            TransferFailed("target_leg_failed", BUSY, FailureCause.TARGET_BUSY),
            TransferFailed("notify_failure", BUSY, FailureCause.TARGET_BUSY),
            ENDED,
        ]
        assert calls_of(events, A1001) == {("b1-agent-leg-busy", "+34900000001")}
        assert seen_by(events, A1002) == []  # its phone never rang: 486 straight away

    def test_attended_transfer(self) -> None:
        _, events = run(load_flow("attended_pbx"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            consult(ConsultState.DIALING),
            consult(ConsultState.RINGING),
            consult(ConsultState.ANSWERED),
            TransferRequested(TransferKind.ATTENDED, "1002"),
            ACCEPTED,
            TRYING,
            CONSULT_OK,
            ENDED,  # the PBX's BYE on the consult leg is part of the transfer: no consult "ended"
        ]
        assert calls_of(events, A1001) == {("a2-agent-leg-attended", "2001")}
        # The PBX's leg to 1002 carries 1001 as From but the PBX's Contact: only 1002's call.
        assert seen_by(events, A1002) == [RINGING, CONNECTED]
        assert calls_of(events, A1002) == {("k3-pbx-to-target", "1001")}

    def test_customer_hangs_up_during_the_consult(self) -> None:
        _, events = run(load_flow("customer_hangup_consult"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            consult(ConsultState.DIALING),
            consult(ConsultState.RINGING),
            consult(ConsultState.ANSWERED),
            TransferFailed("customer_hung_up", None, FailureCause.CUSTOMER_HUNG_UP),
            ENDED,
            consult(ConsultState.ENDED),
        ]
        assert calls_of(events, A1001) == {("h1-agent-leg", "2001")}

    def test_consult_abandoned_and_customer_resumed(self) -> None:
        _, events = run(load_flow("consult_abandoned"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            consult(ConsultState.DIALING),
            consult(ConsultState.RINGING),
            consult(ConsultState.ANSWERED),
            consult(ConsultState.ENDED),
            CONNECTED,
        ]

    def test_consult_cancelled_before_answer(self) -> None:
        _, events = run(load_flow("consult_cancelled"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            consult(ConsultState.DIALING),
            consult(ConsultState.RINGING),
            consult(ConsultState.ENDED),
            CONNECTED,
        ]

    def test_refer_rejected(self) -> None:
        _, events = run(load_flow("refer_rejected"))
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            TransferRequested(TransferKind.BLIND, "1002"),
            TransferFailed("refer_rejected", "SIP/2.0 603 Declined", FailureCause.REFER_REJECTED),
        ]


class TestEndToEndThroughProxy:
    PHONES = PhoneDirectory(["sip:1001@192.168.50.40", "sip:1002@192.168.50.40"])

    def double_capture(self) -> list[Captured]:
        out = []
        for c in load_flow("attended_e2e_proxy"):
            out.append(c)
            out.append(Captured(c.at + 0.0004, proxy_copy(c.data), c.note + " (forwarded)"))
        return out

    def test_attended_transfer_with_replaces(self) -> None:
        tracker, events = run(self.double_capture(), self.PHONES)
        agent, target = "sip:1001@192.168.50.40", "sip:1002@192.168.50.40"
        assert seen_by(events, agent) == [
            RINGING,
            CONNECTED,
            ON_HOLD,
            consult(ConsultState.DIALING),
            consult(ConsultState.RINGING),
            consult(ConsultState.ANSWERED),
            TransferRequested(TransferKind.ATTENDED, "1002"),
            ACCEPTED,
            TRYING,
            # the 200 to INVITE/Replaces, before NOTIFY 200
            TransferSucceeded("dialog_replaced", None, ProofGrade.CONSULT_REPLACED),
            CONSULT_OK,  # the NOTIFY 200 that follows: the session takes its sipfrag only
            ENDED,
        ]
        assert calls_of(events, agent) == {("e2e-customer-1@192.168.50.21", "2001")}
        # The target saw the agent's consult call, then the customer replacing it.
        target_events = [(e.call_id, e.evidence.observation) for e in events if e.phone == target]
        assert target_events == [
            ("e2e-consult-1@192.168.50.11", RINGING),
            ("e2e-consult-1@192.168.50.11", CONNECTED),
            ("e2e-replacing-1@192.168.50.21", CONNECTED),
            ("e2e-consult-1@192.168.50.11", ENDED),
        ]
        assert tracker.stats.duplicates == 24  # every forwarded copy
        assert tracker.stats.messages == 48

    def test_single_capture_gives_the_same_evidence(self) -> None:
        _, once = run(load_flow("attended_e2e_proxy"), self.PHONES)
        _, twice = run(self.double_capture(), self.PHONES)
        assert [e.evidence.observation for e in once] == [e.evidence.observation for e in twice]


class TestIdempotentInput:
    def test_retransmissions_change_nothing(self) -> None:
        flow = load_flow("blind_pbx")
        noisy: list[Captured] = []
        for i, c in enumerate(flow):
            noisy.append(c)
            if i % 2 == 0:  # T1-style retransmissions: 0.5 s, then 1 s later
                noisy.append(Captured(c.at + 0.5, c.data, c.note))
                noisy.append(Captured(c.at + 1.5, c.data, c.note))
        clean, _ = run(flow)
        tracker, events = run(noisy)
        assert seen_by(events, A1001) == BLIND_1001
        # Messages of no tracked dialog count as unmatched before de-duplication is tried.
        extra = tracker.stats.duplicates + tracker.stats.unmatched - clean.stats.unmatched
        assert extra == 2 * len(range(0, len(flow), 2))
        assert tracker.stats.dedupe_entries == clean.stats.dedupe_entries

    def test_notify_captured_before_the_202(self) -> None:
        flow = load_flow("blind_pbx")
        i = next(n for n, c in enumerate(flow) if c.data.startswith(b"SIP/2.0 202"))
        flow[i], flow[i + 1] = flow[i + 1], flow[i]  # NOTIFY 100 first
        _, events = run(flow)
        assert seen_by(events, A1001) == [
            RINGING,
            CONNECTED,
            TransferRequested(TransferKind.BLIND, "1002"),
            TRYING,  # the late 202 would move the REFER backwards: not reported
            TARGET_OK,
            NOTIFY_REPORT,
            ENDED,
        ]

    def test_notify_ok_after_the_pbx_bye_still_proves_the_transfer(self) -> None:
        flow = load_flow("blind_pbx")
        bye = next(n for n, c in enumerate(flow) if c.data.startswith(b"BYE"))
        notify = next(n for n, c in enumerate(flow) if b"\r\n\r\nSIP/2.0 200 OK" in c.data)
        flow.insert(bye + 1, flow.pop(notify))
        _, events = run(flow)
        assert seen_by(events, A1001)[-3:] == [TARGET_OK, ENDED, NOTIFY_REPORT]

    def test_unknown_phones_are_ignored(self) -> None:
        tracker, events = run(load_flow("attended_pbx"), PhoneDirectory(["sip:3001@pbx.example"]))
        assert events == []
        assert tracker.stats.dialogs == 0
        assert tracker.stats.unmatched == tracker.stats.messages

    def test_exact_host_match_without_user_matching(self) -> None:
        # The agent's leg shows 1001 under the phone's own address: configure that one.
        phones = PhoneDirectory(["sip:1001@192.168.50.11"])
        _, events = run(load_flow("blind_pbx"), phones)
        assert seen_by(events, "sip:1001@192.168.50.11") == BLIND_1001

    def test_garbage_is_counted_not_raised(self) -> None:
        tracker = SipTracker(PBX_PHONES, "hep")
        assert tracker.feed_bytes(b"\x00\x01 not sip", T0) == []
        assert tracker.feed_bytes(b"INVITE sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n", T0) == []
        bad_cseq = load_flow("blind_pbx")[2].data.replace(b"CSeq: 101 INVITE", b"CSeq: x INVITE")
        assert tracker.feed_bytes(bad_cseq, T0) == []
        assert tracker.stats.dropped == 3 and tracker.stats.messages == 3


class TestDesktopOutcome:
    """Pipe the evidence into the session machine: what the agent's desktop ends up showing."""

    def session(self) -> Session:
        return Session(
            "acme", "s-1", "a-7", Customer("2001"), "2026-11-25T11:00:00.000Z", call=Call()
        )

    def apply(self, session: Session, events: list[PhoneEvent], phone: str) -> Session:
        for event in events:
            if event.phone == phone:
                session = apply_evidence(session, event.evidence, now=event.evidence.at).session
        return session

    def test_attended_transfer_is_confirmed_by_the_phone(self) -> None:
        _, events = run(load_flow("attended_pbx"))
        s = self.session()
        s = self.apply(s, events[:3], A1001)  # rings, answered, on hold
        now = "2026-11-25T11:06:12.500Z"
        s = desktop_step(s, Action.OPEN, transfer_enabled=True, now=now).session
        s = desktop_step(s, Action.INTERNAL, transfer_enabled=True, now=now).session
        s = self.apply(s, events[3:], A1001)
        assert s.status is SessionStatus.CALL_TRANSFERRED
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE
        assert s.transfer.kind is TransferKind.ATTENDED and s.transfer.target == "1002"
        assert s.transfer.phone.refer is ReferState.SUCCEEDED
        assert s.transfer.phone.consult is ConsultState.ANSWERED
        assert s.transfer.phone.last_sipfrag == "SIP/2.0 200 OK"
        assert s.call.state is CallState.ENDED

    def test_busy_target_leaves_the_transfer_failed(self) -> None:
        _, events = run(load_flow("blind_busy_pbx"))
        s = self.apply(self.session(), events, A1001)
        assert s.status is SessionStatus.ACTIVE
        assert s.transfer.state is TransferState.FAILED
        assert s.transfer.phone.last_sipfrag == "SIP/2.0 486 Busy Here"

    def test_evidence_is_never_a_duplicate_for_the_session(self) -> None:
        # Each observation changes the session: nothing is re-sent unchanged.
        _, events = run(load_flow("attended_pbx"))
        s = self.session()
        for event in events:
            if event.phone == A1001:
                outcome = apply_evidence(s, event.evidence, now=event.evidence.at)
                assert outcome.changed, event
                s = outcome.session


class TestMemory:
    AGENTS = [f"sip:{1000 + n}@pbx.example" for n in range(50)]

    def call(self, n: int, start: float) -> list[tuple[float, bytes]]:
        agent = 1000 + n % 50
        cid = f"mem-{n}@pbx"
        base = (
            f"Call-ID: {cid}\r\nFrom: <sip:+3490{n:07d}@pbx>;tag=p{n}\r\n"
            f"To: <sip:{agent}@10.0.0.{n % 50}>{{to_tag}}\r\nContent-Length: 0\r\n"
        )

        def msg(
            start_line: str, cseq: str, branch: str, extra: str = "", tag: bool = True
        ) -> bytes:
            via = f"Via: SIP/2.0/UDP 10.0.1.1:5060;branch=z9hG4bK{branch}{n}\r\n"
            to_tag = f";tag=a{n}" if tag else ""
            head = base.replace("{to_tag}", to_tag)
            return f"{start_line}\r\n{via}{head}CSeq: {cseq}\r\n{extra}\r\n".encode()

        contact = f"Contact: <sip:{agent}@10.0.0.{n % 50}>\r\n"
        return [
            (start, msg(f"INVITE sip:{agent}@10.0.0.1 SIP/2.0", "1 INVITE", "i", tag=False)),
            (start + 0.1, msg("SIP/2.0 180 Ringing", "1 INVITE", "i", contact)),
            (start + 2, msg("SIP/2.0 200 OK", "1 INVITE", "i", contact)),
            (start + 2, msg(f"ACK sip:{agent}@10.0.0.1 SIP/2.0", "1 ACK", "a")),
            (start + 30, msg(f"BYE sip:{agent}@10.0.0.1 SIP/2.0", "2 BYE", "b")),
            (start + 30, msg("SIP/2.0 200 OK", "2 BYE", "b")),
        ]

    def test_state_stays_bounded_over_20000_calls(self) -> None:
        tracker = SipTracker(PhoneDirectory(self.AGENTS, match_user=True), "hep")
        pending: list[tuple[float, bytes]] = []
        peak_dialogs = peak_keys = events = 0
        for n in range(20_000):
            start = T0 + n * 0.05  # 20 new calls a second, 30 s each: ~600 up at once
            pending += self.call(n, start)
            if n % 100 == 99:
                pending.sort(key=lambda item: item[0])
                due = [p for p in pending if p[0] <= start]
                pending = pending[len(due) :]
                for at, data in due:
                    events += len(tracker.feed_bytes(data, at))
                deadline = tracker.next_deadline()
                if deadline is not None and deadline <= start:
                    tracker.expire(start)
                stats = tracker.stats
                peak_dialogs = max(peak_dialogs, stats.dialogs)
                peak_keys = max(peak_keys, stats.dedupe_entries)
        for at, data in sorted(pending, key=lambda item: item[0]):
            events += len(tracker.feed_bytes(data, at))
        assert events == 20_000 * 3  # ringing, connected, ended
        assert peak_dialogs < 1_500  # ~600 live + ~640 lingering 32 s after their BYE
        assert peak_keys < 4_500  # 120 messages a second for a 32 s window
        tracker.expire(T0 + 20_000 * 0.05 + 3600)
        assert tracker.stats.dialogs == 0 and tracker.stats.dedupe_entries == 0
        assert tracker.next_deadline() is None


def test_deadlines_are_reported_in_whole_ticks() -> None:
    tracker = SipTracker(PBX_PHONES, "hep")
    first = load_flow("blind_pbx")[2]  # the PBX's INVITE to 1001
    tracker.feed_bytes(first.data, T0 + 0.3)
    assert tracker.next_deadline() == T0 + 33  # de-duplication window 32 s, rounded up
    tracker.expire(T0 + 33)
    assert tracker.stats.dedupe_entries == 0 and tracker.stats.dialogs == 1
    assert tracker.next_deadline() == T0 + 301  # an INVITE never answered: 300 s
    exact = SipTracker(PBX_PHONES, "hep", tick=0)
    exact.feed_bytes(first.data, T0 + 0.3)
    assert exact.next_deadline() == pytest.approx(T0 + 32.3)


def test_rfc3339_milliseconds() -> None:
    assert rfc3339(T0 + 0.123) == "2026-11-25T11:05:42.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("name", sorted(p.stem for p in FLOWS.glob("*.txt")))
def test_every_flow_message_parses(name: str) -> None:
    tracker = SipTracker(PBX_PHONES, "hep")
    for c in load_flow(name):
        tracker.feed_bytes(c.data, c.at)
    assert tracker.stats.dropped == 0


def test_evidence_carries_the_configured_phone_uri() -> None:
    _, events = run(load_flow("refer_rejected"))
    assert {e.phone for e in events} == {A1001}
    assert {e.evidence.source for e in events} == {"hep"}  # the source name it was given
