"""Real captures (Kamailio siptrace, SIPp phones) replayed through decode, parse and tracking.

What phone 1001 (the agent) is reported to have done, per case: exactly the evidence its
session would receive. The captures are made by `scripts/rig/record.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.evidence import PhoneEvent, describe
from bridge.hep.decode import decode_hep
from bridge.hep.directory import PhoneDirectory
from bridge.hep.tracker import SipTracker
from tests.rig.hepfile import FIXTURES, read_hep_file

RINGING = ("call_state", "ringing")
CONNECTED = ("call_state", "connected")
ON_HOLD = ("call_state", "on_hold")
ENDED = ("call_state", "ended")
CONSULT = [("consult", "dialing"), ("consult", "ringing"), ("consult", "answered")]
REQUESTED_BLIND = ("transfer_requested", "blind")
ACCEPTED_TRYING = [("transfer_progress", "accepted"), ("transfer_progress", "trying")]

EXPECTED = {
    "blind_success": [
        RINGING,
        CONNECTED,
        REQUESTED_BLIND,
        *ACCEPTED_TRYING,
        # The proof is the target's leg answering with the customer; the NOTIFY 200 only the
        # transferee's report of it.
        ("transfer_succeeded", "target_leg_answered"),
        ("transfer_reported", "notify_2xx"),
        ENDED,
    ],
    "blind_busy": [
        RINGING,
        CONNECTED,
        REQUESTED_BLIND,
        *ACCEPTED_TRYING,
        ("transfer_failed", "target_leg_failed"),
        ("transfer_failed", "notify_failure"),
        ENDED,
    ],
    "refer_rejected": [
        RINGING,
        CONNECTED,
        REQUESTED_BLIND,
        ("transfer_failed", "refer_rejected"),
        ENDED,
    ],
    "attended_success": [
        RINGING,
        CONNECTED,
        ON_HOLD,
        *CONSULT,
        ("transfer_requested", "attended"),
        *ACCEPTED_TRYING,
        ("transfer_succeeded", "dialog_replaced"),
        ("transfer_succeeded", "notify_2xx_consult_answered"),
        ENDED,
    ],
    "consult_customer_hangup": [
        RINGING,
        CONNECTED,
        ON_HOLD,
        *CONSULT,
        ("transfer_failed", "customer_hung_up"),
        ENDED,
        ("consult", "ended"),
    ],
    "consult_abandoned": [
        RINGING,
        CONNECTED,
        ON_HOLD,
        *CONSULT,
        ("consult", "ended"),
        CONNECTED,
        ENDED,
    ],
}


def replay(name: str) -> tuple[list[PhoneEvent], SipTracker]:
    directory = PhoneDirectory(["sip:1001@pbx.example", "sip:1002@pbx.example"], match_user=True)
    tracker = SipTracker(directory, source="hep")
    events: list[PhoneEvent] = []
    for raw in read_hep_file(FIXTURES / f"{name}.hep"):
        packet = decode_hep(raw)
        assert packet.timestamp is not None
        events += tracker.feed_bytes(packet.payload, packet.timestamp)
    return events, tracker


def brief(event: PhoneEvent) -> tuple[str, str]:
    d = describe(event.evidence.observation)
    kind = d["type"] or ""
    key = d.get("state") or d.get("kind") or d.get("refer") or d.get("reason") or ""
    return kind, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_agent_phone_evidence_from_a_real_capture(name: str) -> None:
    events, tracker = replay(name)
    agent = [e for e in events if e.phone == "sip:1001@pbx.example"]
    assert [brief(e) for e in agent] == EXPECTED[name]
    # All of it is about the customer's call, whatever leg it was seen on.
    assert {(e.call_id, e.remote) for e in agent} == {(agent[0].call_id, "2000")}
    # Every message the proxy forwarded was seen twice and counted once.
    assert tracker.stats.duplicates > 0
    assert tracker.stats.dropped == 0


def test_replaying_a_capture_twice_adds_nothing() -> None:
    directory = PhoneDirectory(["sip:1001@pbx.example"], match_user=True)
    tracker = SipTracker(directory, source="hep")
    packets = [decode_hep(raw) for raw in read_hep_file(FIXTURES / "blind_success.hep")]
    first = [e for p in packets for e in tracker.feed_bytes(p.payload, p.timestamp or 0.0)]
    again = [e for p in packets for e in tracker.feed_bytes(p.payload, p.timestamp or 0.0)]
    assert first and again == []


def test_captures_exist_for_every_case() -> None:
    assert {p.stem for p in Path(FIXTURES).glob("*.hep")} >= set(EXPECTED)
