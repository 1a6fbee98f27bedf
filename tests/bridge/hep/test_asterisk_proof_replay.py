"""Real Asterisk 22 captures (HEP) of transfers whose target rings, refuses, never answers, or
sits behind early media: the SIP path must never prove a transfer before a person at the target
answered, and must name the target's own cause when it did not.

The captures are `tests/fixtures/hep/asterisk-<case>.hep`; the phones' side (when the target
really answered) is in `tests/fixtures/ami/asterisk-<case>.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.evidence import PhoneEvent, TransferFailed, TransferReported, TransferSucceeded
from bridge.hep.decode import decode_hep
from bridge.hep.directory import PhoneDirectory
from bridge.hep.sides import hop
from bridge.hep.tracker import SipTracker
from bridge.model import (
    Call,
    ConfirmedBy,
    Customer,
    FailureCause,
    ProofGrade,
    Session,
    TransferKind,
    TransferState,
)
from bridge.session.phone import apply_evidence
from bridge.sip import parse_message
from tests.rig.hepfile import read_hep_file, replay_sip

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
AGENTS = ("1001", "1002", "1003", "1004")
T = TransferState
P = ProofGrade
F = FailureCause

# case -> (transferring agent, state, proof, kind, failure) as the SIP path alone can tell it
EXPECTED: dict[str, tuple[str, TransferState, ProofGrade, TransferKind, FailureCause | None]] = {
    "blind_answered": ("1001", T.TRANSFERRED, P.TARGET_ANSWERED, TransferKind.BLIND, None),
    "blind_ring_answer": ("1001", T.TRANSFERRED, P.TARGET_ANSWERED, TransferKind.BLIND, None),
    # pjsua2's ringing target sends no early media, so here Asterisk waited: NOTIFY 180, then
    # 200 after the answer or 503 after the refusal. The target's own leg decides either way.
    "blind_ring_reject": ("1001", T.FAILED, P.NONE, TransferKind.BLIND, F.TARGET_REJECTED),
    "blind_ring_busy": ("1001", T.FAILED, P.NONE, TransferKind.BLIND, F.TARGET_BUSY),
    "blind_no_answer": ("1001", T.FAILED, P.NONE, TransferKind.BLIND, F.TARGET_NO_ANSWER),
    # 8100 plays early media then gives busy without dialling anyone: no leg toward a target
    # exists; what tells is the PBX dropping the customer's own dialog, `Reason: Q.850;cause=17`.
    "blind_early_media_busy": (
        "1001",
        T.FAILED,
        P.PBX_REPORTED,
        TransferKind.BLIND,
        F.TARGET_BUSY,
    ),
    "blind_early_media_answer": (
        "1001",
        T.TRANSFERRED,
        P.TARGET_ANSWERED,
        TransferKind.BLIND,
        None,
    ),
    "noprogress_busy": ("1004", T.FAILED, P.PBX_REPORTED, TransferKind.BLIND, F.TARGET_BUSY),
    "noprogress_answer": ("1004", T.TRANSFERRED, P.TARGET_ANSWERED, TransferKind.BLIND, None),
    "semi_attended_answer": (
        "1001",
        T.TRANSFERRED,
        P.TARGET_ANSWERED,
        TransferKind.SEMI_ATTENDED,
        None,
    ),
    "semi_attended_reject": (
        "1001",
        T.FAILED,
        P.PBX_REPORTED,
        TransferKind.SEMI_ATTENDED,
        F.TARGET_REJECTED,
    ),
    "semi_attended_no_answer": (
        "1001",
        T.FAILED,
        P.PBX_REPORTED,
        TransferKind.SEMI_ATTENDED,
        F.TARGET_NO_ANSWER,
    ),
    "attended": ("1001", T.TRANSFERRED, P.CONSULT_REPLACED, TransferKind.ATTENDED, None),
}


def uri(ext: str) -> str:
    return f"sip:{ext}@127.0.0.1"


def sidecar(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "ami" / f"asterisk-{case}.json").read_text())
    return data


def replay(case: str) -> list[PhoneEvent]:
    return replay_sip(FIXTURES / "hep" / f"asterisk-{case}.hep", [uri(e) for e in AGENTS])


def target_answered_at(case: str) -> float | None:
    """When the target's phone (1002) answered, from the phones' own record."""
    for leg in sidecar(case)["legs"]:
        if leg["phone"] == "1002":
            for state, _code, at in leg["states"]:
                if state == "CONFIRMED":
                    return float(at)
    return None


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_no_proof_before_the_target_answers_and_the_right_verdict(case: str) -> None:
    agent, state, proof, kind, failure = EXPECTED[case]
    events = [e for e in replay(case) if e.phone == uri(agent)]
    answered = target_answered_at(case)
    for event in events:
        if isinstance(event.evidence.observation, TransferSucceeded):
            # Capture and phone clocks are this one machine's: 5 ms covers the stamps' rounding.
            assert answered is not None, f"{case}: proof but the target never answered"
            assert stamp(event.evidence.at) >= answered - 0.005, case
    session = Session(
        "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
    )
    for event in events:
        session = apply_evidence(session, event.evidence, now=event.evidence.at).session
    t = session.transfer
    assert (t.state, t.phone.proof, t.kind, t.phone.failure) == (state, proof, kind, failure)
    if state is TransferState.TRANSFERRED:
        assert t.confirmed_by is ConfirmedBy.PHONE and t.phone.handoff_at is not None
        assert answered is not None and stamp(t.phone.handoff_at) >= answered - 0.005
    reported = [e for e in events if isinstance(e.evidence.observation, TransferReported)]
    # Whenever the PBX reported success, the session says when, even after the proof.
    assert (t.phone.pbx_reported_at is not None) == bool(reported), case


def replay_edited(case: str, edit: Callable[[bytes], bytes | None]) -> list[PhoneEvent]:
    """As `replay`, each SIP payload passed through `edit` (None drops it)."""
    return replay_sip(FIXTURES / "hep" / f"asterisk-{case}.hep", [uri(e) for e in AGENTS], edit)


@pytest.mark.parametrize(
    ("reason", "failure"),
    [
        (b"Reason: Q.850;cause=17", F.TARGET_BUSY),
        (b"Reason: Q.850;cause=21", F.TARGET_REJECTED),
        (b"Reason: Q.850;cause=19", F.TARGET_NO_ANSWER),
        # "normal clearing", or no reason: the customer may have talked to the target first
        (b"Reason: Q.850;cause=16", None),
        (b"X-No-Reason: 1", None),
    ],
)
def test_the_pbx_dropping_the_customer_fails_a_reported_transfer_only_for_a_target_cause(
    reason: bytes, failure: FailureCause | None
) -> None:
    def edit(payload: bytes) -> bytes:
        if payload.startswith(b"BYE sip:2000@"):
            return payload.replace(b"Reason: Q.850;cause=17", reason)
        return payload

    events = [e for e in replay_edited("blind_early_media_busy", edit) if e.phone == uri("1001")]
    session = Session(
        "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
    )
    for event in events:
        session = apply_evidence(session, event.evidence, now=event.evidence.at).session
    t = session.transfer
    assert t.phone.failure is failure
    assert t.state is (TransferState.FAILED if failure else TransferState.NONE)
    assert t.phone.proof is ProofGrade.PBX_REPORTED


def test_a_customer_who_hangs_up_after_a_reported_transfer_is_no_failure() -> None:
    """The customer's own BYE (not the PBX's), even with a busy cause: nothing proves they did
    not reach the target, so only the PBX's report stays and the agent decides."""
    turned: list[bytes] = []

    def edit(payload: bytes) -> bytes:
        if not payload.startswith(b"BYE sip:2000@"):
            return payload
        # The same dialog's BYE sent by the customer: From and To (with their tags) swapped.
        lines = payload.split(b"\r\n")
        frm = next(n for n, line in enumerate(lines) if line.startswith(b"From:"))
        to = next(n for n, line in enumerate(lines) if line.startswith(b"To:"))
        lines[frm], lines[to] = b"From:" + lines[to][3:], b"To:" + lines[frm][5:]
        turned.append(b"\r\n".join(lines))
        return turned[-1]

    events = [e for e in replay_edited("blind_early_media_busy", edit) if e.phone == uri("1001")]
    assert turned and parse_message(turned[0]).from_tag != parse_message(turned[0]).to_tag
    assert not [e for e in events if isinstance(e.evidence.observation, TransferFailed)]
    session = Session(
        "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
    )
    for event in events:
        session = apply_evidence(session, event.evidence, now=event.evidence.at).session
    assert session.transfer.state is TransferState.NONE
    assert session.transfer.phone.proof is ProofGrade.PBX_REPORTED


def test_a_target_that_never_answers_is_named_whichever_comes_first_the_503_or_the_cancel() -> None:
    """Asterisk gives up on the ringing target (Dial's timeout) by sending the agent's NOTIFY
    503 and the CANCEL to the target in the same millisecond, in either order (seen live in
    about one run in three). The target's own leg names the cause either way."""
    packets = read_hep_file(FIXTURES / "hep" / "asterisk-blind_no_answer.hep")
    payloads = [decode_hep(p).payload for p in packets]
    notify = next(i for i, p in enumerate(payloads) if b"SIP/2.0 503" in p and b"NOTIFY" in p)
    cancel = next(i for i, p in enumerate(payloads) if p.startswith(b"CANCEL sip:1002@"))
    orders = {
        "as captured": packets,
        "NOTIFY moved before the CANCEL": _moved(packets, notify, min(notify, cancel)),
        "CANCEL moved before the NOTIFY": _moved(packets, cancel, min(notify, cancel)),
    }
    for name, order in orders.items():
        tracker = SipTracker(PhoneDirectory([uri(e) for e in AGENTS]), source="hep")
        events: list[PhoneEvent] = []
        for packet in order:
            hep = decode_hep(packet)
            src, dst = hop(hep.src_ip, hep.src_port), hop(hep.dst_ip, hep.dst_port)
            events += tracker.feed_bytes(hep.payload, hep.timestamp or 0.0, None, src, dst)
        session = Session(
            "acme", "s-1", "a-1", Customer("2000"), "2026-01-01T00:00:00.000Z", call=Call()
        )
        for event in (e for e in events if e.phone == uri("1001")):
            session = apply_evidence(session, event.evidence, now=event.evidence.at).session
        t = session.transfer
        assert (t.state, t.phone.failure) == (T.FAILED, F.TARGET_NO_ANSWER), name


def _moved(packets: list[bytes], src: int, dst: int) -> list[bytes]:
    out = [p for i, p in enumerate(packets) if i != src]
    out.insert(dst, packets[src])
    return out
