"""Proof from the target's side on the SIP path: a PBX's 2xx NOTIFY is only its report.

Asterisk sends NOTIFY `SIP/2.0 200 OK` for a blind REFER at the first media frame toward the
customer (ringback, early media, an announcement), at once with `refer_blind_progress=no`, and
for a REFER with Replaces naming a consult that still rings. These tests move the real blind
flow's messages into those orders and check that the session never shows `transferred` before
the PBX's leg to the target is answered, and fails with the target's own cause when it is not.
"""

from __future__ import annotations

import time
from dataclasses import replace

from bridge.evidence import PhoneEvent, TransferReported, TransferRequested, TransferSucceeded
from bridge.hep.tracker import SipTracker
from bridge.model import (
    Action,
    Call,
    CallState,
    ConfirmedBy,
    Customer,
    FailureCause,
    ProofGrade,
    Session,
    TransferKind,
    TransferState,
)
from bridge.session.machine import desktop_step
from bridge.session.phone import apply_evidence
from tests.bridge.hep.test_transfer_detector import (
    A1001,
    PBX_PHONES,
    T0,
    Captured,
    load_flow,
    run,
    seen_by,
    to_wire,
)

NOTIFY_200 = b"\r\n\r\nSIP/2.0 200 OK"


def _index(flow: list[Captured], start: bytes, contains: bytes = b"") -> int:
    return next(n for n, c in enumerate(flow) if c.data.startswith(start) and contains in c.data)


def early_report(flow: list[Captured]) -> list[Captured]:
    """The NOTIFY 200 (and its 200 answer) moved to 20 ms after the target's INVITE: what
    Asterisk does when ringback or early media flows to the customer."""
    flow = list(flow)
    notify = flow.pop(_index(flow, b"NOTIFY", NOTIFY_200))
    answer = flow.pop(_index(flow, b"SIP/2.0 200 OK", b"NOTIFY"))
    invite = _index(flow, b"INVITE", b"t1-target-leg-blind")
    at = flow[invite].at
    flow.insert(invite + 1, replace(notify, at=at + 0.02))
    flow.insert(invite + 2, replace(answer, at=at + 0.021))
    return sorted(flow, key=lambda c: c.at)


def target_answers_with(flow: list[Captured], status: bytes) -> list[Captured]:
    """The target's final answer replaced by ``status`` (its phone rejects instead)."""
    i = _index(flow, b"SIP/2.0 200 OK", b"t1-target-leg-blind")
    head, _, _ = flow[i].data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines[0] = b"SIP/2.0 " + status
    text = b"\r\n".join(line for line in lines if not line.lower().startswith(b"content-"))
    flow = list(flow)
    flow[i] = replace(flow[i], data=to_wire(text.decode().replace("\r\n", "\n")))
    return flow


def session_after(events: list[PhoneEvent], *, until: float | None = None) -> Session:
    s = Session("acme", "s-1", "a-7", Customer("2001"), "2026-11-25T11:00:00.000Z", call=Call())
    for event in events:
        if event.phone != A1001:
            continue
        if until is not None and event.evidence.at > stamp(until):
            break
        s = apply_evidence(s, event.evidence, now=event.evidence.at).session
    return s


def stamp(offset: float) -> str:
    from bridge.timefmt import rfc3339

    return rfc3339(T0 + offset)


class TestBlindToARingingTarget:
    def test_the_early_notify_is_a_report_and_the_answer_the_proof(self) -> None:
        _, events = run(early_report(load_flow("blind_pbx")))
        observed = seen_by(events, A1001)
        report = observed.index(TransferReported("notify_2xx", "SIP/2.0 200 OK"))
        proof = next(n for n, o in enumerate(observed) if isinstance(o, TransferSucceeded))
        assert report < proof
        # While the target rings (between the report and its answer at 24.0 s):
        ringing = session_after(events, until=23.9)
        assert ringing.transfer.state is TransferState.NONE
        assert ringing.transfer.phone.proof is ProofGrade.PBX_REPORTED
        assert ringing.transfer.phone.pbx_reported_at == stamp(20.030)
        assert ringing.transfer.phone.handoff_at is None
        done = session_after(events)
        assert done.transfer.state is TransferState.TRANSFERRED
        assert done.transfer.confirmed_by is ConfirmedBy.PHONE
        assert done.transfer.phone.proof is ProofGrade.TARGET_ANSWERED
        assert done.transfer.phone.handoff_at == stamp(24.0)
        assert done.transfer.phone.last_sipfrag == "SIP/2.0 200 OK"

    def test_a_target_that_rejects_after_the_report_fails_the_transfer(self) -> None:
        flow = target_answers_with(early_report(load_flow("blind_pbx")), b"603 Decline")
        _, events = run(flow)
        s = session_after(events)
        assert s.transfer.state is TransferState.FAILED
        assert s.transfer.phone.failure is FailureCause.TARGET_REJECTED
        assert s.transfer.phone.last_sipfrag == "SIP/2.0 603 Decline"
        # At no point did the session say transferred.
        for n in range(len(events)):
            assert session_after(events[:n]).transfer.state is not TransferState.TRANSFERRED

    def test_busy_and_unanswered_targets_name_their_cause(self) -> None:
        for status, cause in (
            (b"486 Busy Here", FailureCause.TARGET_BUSY),
            (b"480 Temporarily Unavailable", FailureCause.TARGET_NO_ANSWER),
            (b"487 Request Terminated", FailureCause.TARGET_NO_ANSWER),
            (b"404 Not Found", FailureCause.TARGET_UNAVAILABLE),
        ):
            flow = target_answers_with(early_report(load_flow("blind_pbx")), status)
            s = session_after(run(flow)[1])
            assert (s.transfer.state, s.transfer.phone.failure) == (TransferState.FAILED, cause)

    def test_the_agents_yes_on_a_report_is_overruled_by_the_targets_refusal(self) -> None:
        flow = target_answers_with(early_report(load_flow("blind_pbx")), b"486 Busy Here")
        _, events = run(flow)
        s = Session("acme", "s-1", "a-7", Customer("2001"), "2026-11-25T11:00:00.000Z", call=Call())
        mine = [e for e in events if e.phone == A1001]
        cut = next(
            n for n, e in enumerate(mine) if isinstance(e.evidence.observation, TransferReported)
        )
        for event in mine[: cut + 1]:
            s = apply_evidence(s, event.evidence, now=event.evidence.at).session
        for action in (Action.OPEN, Action.INTERNAL, Action.NEXT, Action.CONFIRM):
            s = desktop_step(s, action, transfer_enabled=True, now=stamp(20.5)).session
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.AGENT  # a report is not the phone's proof
        for event in mine[cut + 1 :]:
            s = apply_evidence(s, event.evidence, now=event.evidence.at).session
        assert s.transfer.state is TransferState.FAILED
        assert s.transfer.phone.failure is FailureCause.TARGET_BUSY
        assert s.transfer.conflict is not None and s.transfer.conflict.desktop == "confirm"


class TestClockIndependence:
    def test_an_old_capture_replayed_into_one_running_tracker_gives_the_same_verdict(self) -> None:
        # The capture was taken years ago; the tracker's windows and expiry run on the bridge's
        # monotonic clock, which is what the HEP source feeds as `now`.
        tracker = SipTracker(PBX_PHONES, "hep")
        verdicts = []
        for replay in range(10):
            flow = load_flow("blind_pbx")
            shift = -5 * 365 * 86400.0 if replay % 2 else 0.0  # some replays stamped long ago
            events: list[PhoneEvent] = []
            for captured in flow:
                now = time.monotonic()
                events += tracker.feed_bytes(captured.data, captured.at + shift, now)
                deadline = tracker.next_deadline()
                if deadline is not None and deadline <= now:
                    tracker.expire(now)
            s = session_after([replace_at(e, -shift) for e in events])
            verdicts.append((s.transfer.state, s.transfer.phone.proof, s.call.state))
            # The next replay reuses the same Call-IDs: make them new calls, as a later call is.
            tracker.expire(time.monotonic() + 10 * 3600)
        assert (
            verdicts
            == [(TransferState.TRANSFERRED, ProofGrade.TARGET_ANSWERED, CallState.ENDED)] * 10
        )

    def test_a_capture_host_clock_far_ahead_does_not_expire_live_dialogs(self) -> None:
        tracker = SipTracker(PBX_PHONES, "hep")
        flow = load_flow("blind_pbx")
        events: list[PhoneEvent] = []
        start = time.monotonic()
        for n, captured in enumerate(flow):
            # Stamps jump a day ahead mid-call; the bridge's own clock moves by milliseconds.
            skew = 86400.0 if n > len(flow) // 2 else 0.0
            now = start + (captured.at - T0) / 1000
            events += tracker.feed_bytes(captured.data, captured.at + skew, now)
            tracker.expire(now)
        kinds = [type(e.evidence.observation).__name__ for e in events if e.phone == A1001]
        assert "TransferSucceeded" in kinds


def replace_at(event: PhoneEvent, shift: float) -> PhoneEvent:
    """The event as if observed ``shift`` seconds later (to compare replays stamped apart)."""
    from datetime import datetime

    from bridge.evidence import PhoneEvidence
    from bridge.timefmt import rfc3339

    at = datetime.fromisoformat(event.evidence.at).timestamp() + shift
    evidence = PhoneEvidence(event.evidence.source, rfc3339(at), event.evidence.observation)
    return PhoneEvent(event.phone, evidence, event.call_id, event.remote)


def test_kind_and_target_of_the_blind_flow_are_kept() -> None:
    s = session_after(run(early_report(load_flow("blind_pbx")))[1])
    assert (s.transfer.kind, s.transfer.target) == (TransferKind.BLIND, "1002")


def semi_attended(flow: list[Captured], target_status: bytes | None = None) -> list[Captured]:
    """The attended flow with the transfer pressed while the consult still rings: the target's
    answer (the PBX's leg to 1002) comes 2 s after the REFER, the agent's consult never answers.
    With ``target_status`` the target's phone answers that instead of 200."""
    flow = list(flow)
    far_ok = flow.pop(_index(flow, b"SIP/2.0 200 OK", b"CSeq: 401 INVITE"))
    far_ack = flow.pop(_index(flow, b"ACK sip:1002", b"k3-pbx-to-target"))
    flow.pop(_index(flow, b"SIP/2.0 200 OK", b"CSeq: 8101 INVITE"))  # the consult's own 200
    flow.pop(_index(flow, b"ACK", b"CSeq: 8101 ACK"))
    at = T0 + 52.0
    flow += [replace(far_ok, at=at), replace(far_ack, at=at + 0.001)]
    if target_status is not None:
        flow = target_answers_on(flow, at, target_status)
    return sorted(flow, key=lambda c: c.at)


def target_answers_on(flow: list[Captured], at: float, status: bytes) -> list[Captured]:
    i = next(n for n, c in enumerate(flow) if c.at == at)
    head, _, _ = flow[i].data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    lines[0] = b"SIP/2.0 " + status
    text = b"\r\n".join(line for line in lines if not line.lower().startswith(b"content-"))
    flow[i] = replace(flow[i], data=to_wire(text.decode().replace("\r\n", "\n")))
    del flow[i + 1]  # no ACK of ours follows a final error in this flow
    return flow


class TestSemiAttended:
    def test_a_refer_naming_a_ringing_consult_is_semi_attended_and_waits_for_the_answer(
        self,
    ) -> None:
        _, events = run(semi_attended(load_flow("attended_pbx")))
        observed = seen_by(events, A1001)
        assert TransferRequested(TransferKind.SEMI_ATTENDED, "1002") in observed
        assert TransferReported("notify_2xx", "SIP/2.0 200 OK") in observed
        before = session_after(events, until=51.9)
        assert before.transfer.kind is TransferKind.SEMI_ATTENDED
        assert before.transfer.state is TransferState.NONE
        assert before.transfer.phone.proof is ProofGrade.PBX_REPORTED
        after = session_after(events)
        assert after.transfer.state is TransferState.TRANSFERRED
        assert after.transfer.phone.proof is ProofGrade.TARGET_ANSWERED
        assert after.transfer.phone.handoff_at == stamp(52.0)

    def test_a_target_that_rejects_or_never_answers_fails_it(self) -> None:
        for status, cause in (
            (b"603 Decline", FailureCause.TARGET_REJECTED),
            (b"487 Request Terminated", FailureCause.TARGET_NO_ANSWER),
        ):
            _, events = run(semi_attended(load_flow("attended_pbx"), status))
            s = session_after(events)
            assert s.transfer.kind is TransferKind.SEMI_ATTENDED
            assert (s.transfer.state, s.transfer.phone.failure) == (TransferState.FAILED, cause)


def test_target_watches_and_remembered_invites_are_bounded_and_counted() -> None:
    """A flood of transfers or new INVITEs cannot grow the tracker's memory without bound; what
    is dropped is counted (`transfer_bridge_sip_messages{outcome="evicted"}`)."""
    from bridge.hep.legs import Leg, LegRole
    from bridge.hep.targets import MAX_CALLERS, MAX_WATCHES, CallerIndex, TargetWatches

    watches = TargetWatches()
    call = Leg("c", "sip:1001@pbx", False, 0.0)
    for n in range(MAX_WATCHES + 10):
        watches.watch(f"+3460000{n:04d}", call, "sip:1001@pbx", LegRole.TARGET, 1e9)
    assert (len(watches), watches.dropped) == (MAX_WATCHES, 10)
    callers = CallerIndex()
    for n in range(MAX_CALLERS + 5):
        callers.note(f"+3460000{n:05d}", f"id-{n}", "tag", 1.0)
    assert (len(callers), callers.dropped) == (MAX_CALLERS, 5)
    assert callers.latest("+346000000000", set(), 1.0) is None  # the oldest went first
    assert callers.latest(f"+3460000{MAX_CALLERS + 4:05d}", set(), 1.0) is not None
    tracker = SipTracker(PBX_PHONES, "hep")
    tracker.dialogs.callers.dropped = 3
    assert tracker.stats.evicted == 3


def test_a_malformed_reason_header_is_no_cause_and_no_error() -> None:
    """`Reason` is whatever the far end wrote: only a plain Q.850 cause number counts."""
    from bridge.hep.targets import q850_cause
    from bridge.sip import parse_message

    def bye(reason: str) -> int | None:
        text = (
            "BYE sip:2000@pbx SIP/2.0\r\nVia: SIP/2.0/UDP pbx;branch=z9hG4bK1\r\n"
            "Call-ID: x\r\nFrom: <sip:1001@pbx>;tag=a\r\n"
            f"To: <sip:2000@pbx>;tag=b\r\nCSeq: 2 BYE\r\nReason: {reason}\r\n\r\n"
        )
        return q850_cause(parse_message(text.encode()))

    assert bye("Q.850;cause=17") == 17
    assert bye('Q.850 ; text="busy" ;cause = 21') == 21
    for junk in ("Q.850;cause=\u00b2", "Q.850;cause=", "Q.850", "", ";;;", "Q.850;cause=1x"):
        assert bye(junk) is None, junk
