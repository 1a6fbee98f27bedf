"""Line states -> phone evidence, replaying what Asterisk 22 really sent (fixtures/dialog)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.dialog import DialogLines, DialogState, LineView, parse_dialog_info
from bridge.dialog.lines import SETTLE_SECONDS
from bridge.dialog.parse import DialogEntry
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvent,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import (
    CallState,
    ConsultState,
    FailureCause,
    ProofGrade,
    ReferState,
    TransferKind,
)
from bridge.sip import parse_message

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dialog"
PHONES = {
    "1001": "sip:1001@127.0.0.1",
    "1002": "sip:1002@127.0.0.1",
    "1004": "sip:1004@127.0.0.1",
}
T0 = 1_800_000_000.0


def replay(name: str) -> list[PhoneEvent]:
    """Every NOTIFY of a recording through parse -> LineView -> DialogLines, at its own time."""
    lines = DialogLines("pbx-dialog", epoch="e")
    lines.set_phones(PHONES)
    views: dict[str, LineView] = {}
    out: list[PhoneEvent] = []
    at = T0
    for item in json.loads((FIXTURES / name).read_text()):
        at = T0 + item["at"]
        # as the service does: expire at each deadline that passed before this item
        while (deadline := lines.next_deadline()) is not None and deadline <= at:
            out += lines.expire(deadline)
        out += lines.expire(at)
        raw = item.get("received", "")
        if not raw.startswith("NOTIFY"):
            continue
        message = parse_message(raw.encode())
        ext = message.from_uri().user or ""
        view = views.setdefault(ext, LineView())
        assert view.apply(parse_dialog_info(message.body))
        out += lines.update(ext, list(view.dialogs.values()), at)
    out += lines.expire(at + SETTLE_SECONDS + 0.1)
    return out


def seen(events: list[PhoneEvent], phone: str = "1001") -> list[Observation]:
    return [e.evidence.observation for e in events if e.phone == PHONES[phone]]


def test_blind_transfer_answered() -> None:
    events = replay("asterisk22-blind.json")
    assert seen(events) == [
        CallStateChanged(CallState.RINGING),
        CallStateChanged(CallState.CONNECTED),
        TransferRequested(TransferKind.BLIND, "1002"),
        TransferProgressed(ReferState.TRYING),
        CallStateChanged(CallState.ENDED),
        TransferSucceeded("target_answered_customer"),
    ]
    agent = [e for e in events if e.phone == PHONES["1001"]]
    assert {e.call_id for e in agent} == {"dialog:pbx-dialog:1001:e-1"}
    assert {e.remote for e in agent} == {"2000"}  # the binding key: phone + customer number
    # the target's own line: a call from the customer, answered, then hung up
    assert seen(events, "1002") == [
        CallStateChanged(CallState.RINGING),
        CallStateChanged(CallState.CONNECTED),
        CallStateChanged(CallState.ENDED),
    ]


def test_attended_transfer() -> None:
    events = replay("asterisk22-attended.json")
    assert seen(events) == [
        CallStateChanged(CallState.RINGING),
        CallStateChanged(CallState.CONNECTED),
        ConsultChanged(ConsultState.RINGING, "1002"),
        ConsultChanged(ConsultState.ANSWERED, "1002"),
        CallStateChanged(CallState.ENDED),
        TransferRequested(TransferKind.ATTENDED, "1002"),
        TransferSucceeded("target_kept_consult_call", proof=ProofGrade.CONSULT_REPLACED),
    ]
    success = next(e for e in events if isinstance(e.evidence.observation, TransferSucceeded))
    ended = next(e for e in events if e.evidence.observation == CallStateChanged(CallState.ENDED))
    assert success.evidence.at > ended.evidence.at  # after the settle window


def test_blind_transfer_to_a_busy_target_proves_nothing() -> None:
    events = replay("asterisk22-busy.json")
    assert seen(events) == [
        CallStateChanged(CallState.RINGING),
        CallStateChanged(CallState.CONNECTED),
        CallStateChanged(CallState.ENDED),
    ]
    assert seen(events, "1002") == []


def entry(
    ext: str, state: DialogState, remote: str | None = None, event: str | None = None
) -> DialogEntry:
    return DialogEntry(ext, state, event=event, remote_identity=remote)


def test_consult_that_ends_before_the_agent_leaves_is_no_transfer() -> None:
    lines = DialogLines("d", epoch="e")
    lines.set_phones(PHONES)
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0)
    lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0)
    lines.update("1001", [entry("1001", DialogState.EARLY, "sip:2000@pbx")], T0 + 1)
    lines.update("1001", [entry("1001", DialogState.CONFIRMED)], T0 + 2)
    lines.update("1002", [entry("1002", DialogState.EARLY, "sip:1001@pbx")], T0 + 3)
    lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 4)
    out = lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0 + 5)
    assert [e.evidence.observation for e in out if e.phone == PHONES["1001"]] == [
        ConsultChanged(ConsultState.ENDED, "1002")
    ]
    # the agent and the target hang up almost together: the settle window sees the target go
    lines.update("1002", [entry("1002", DialogState.EARLY, "sip:1001@pbx")], T0 + 6)
    lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 7)
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 8)
    lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0 + 8.5)
    late = lines.expire(T0 + 8 + SETTLE_SECONDS + 1)
    assert not [e for e in late if isinstance(e.evidence.observation, TransferSucceeded)]


def test_target_that_never_answers_the_customer_is_a_failure() -> None:
    lines = DialogLines("d", epoch="e")
    lines.set_phones(PHONES)
    for ext in PHONES:  # the first NOTIFY of each subscription: idle
        lines.update(ext, [entry(ext, DialogState.TERMINATED)], T0 - 1)
    lines.update("1001", [entry("1001", DialogState.EARLY, "sip:+34900000001@pbx")], T0)
    lines.update("1001", [entry("1001", DialogState.CONFIRMED)], T0 + 1)
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 2)
    lines.update("1002", [entry("1002", DialogState.EARLY, "tel:0034900000001")], T0 + 3)
    out = lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0 + 20)
    # Asterisk's hints say neither why nor who: no finer cause than a failed transfer
    failed = TransferFailed("target_not_answered", cause=FailureCause.TRANSFER_FAILED)
    assert failed in [e.evidence.observation for e in out]


def test_a_replaced_dialog_is_an_attended_transfer() -> None:
    """PBXs that report per-dialog RFC 4235 state mark the customer's dialog `replaced`."""
    lines = DialogLines("d", epoch="e")
    lines.set_phones(PHONES)
    lines.update("1001", [], T0 - 1)
    lines.update("1001", [entry("a", DialogState.EARLY, "sip:2000@pbx")], T0)
    lines.update("1001", [entry("a", DialogState.CONFIRMED)], T0 + 1)
    out = lines.update("1001", [entry("a", DialogState.TERMINATED, event="replaced")], T0 + 2)
    assert [e.evidence.observation for e in out][-2:] == [
        TransferRequested(TransferKind.ATTENDED, None),
        TransferSucceeded("dialog_replaced", proof=ProofGrade.CONSULT_REPLACED),
    ]


def test_a_call_up_before_the_first_notify_is_tracked_silently() -> None:
    lines = DialogLines("d", epoch="e")
    lines.set_phones(PHONES)
    assert lines.update("1001", [entry("1001", DialogState.CONFIRMED)], T0) == []
    out = lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 1)
    assert [e.evidence.observation for e in out] == [CallStateChanged(CallState.ENDED)]
    assert lines.update("9999", [entry("9999", DialogState.EARLY)], T0) == []  # not watched


# --- proof grades and failure causes ----------------------------------------------------------


def started(code: int | None = None) -> DialogLines:
    """Agent 1001 on a call with customer 2000; both lines watched since idle."""
    lines = DialogLines("d", epoch="e")
    lines.set_phones(PHONES)
    for ext in PHONES:
        lines.update(ext, [entry(ext, DialogState.TERMINATED)], T0 - 1)
    lines.update("1001", [entry("1001", DialogState.EARLY, "sip:2000@pbx")], T0)
    lines.update("1001", [entry("1001", DialogState.CONFIRMED)], T0 + 1)
    return lines


def transfer_evidence(events: list[PhoneEvent]) -> list[Observation]:
    return transfer_evidence_of([e for e in events if e.phone == PHONES["1001"]])


def transfer_evidence_of(events: list[PhoneEvent]) -> list[Observation]:
    return [
        e.evidence.observation
        for e in events
        if not isinstance(e.evidence.observation, (CallStateChanged, ConsultChanged))
    ]


def test_a_blind_transfer_is_proved_by_the_target_answering_the_customer() -> None:
    lines = started()
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 2)
    out = lines.update("1002", [entry("1002", DialogState.EARLY, "sip:2000@pbx")], T0 + 2.1)
    out += lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 4)
    assert transfer_evidence(out) == [
        TransferRequested(TransferKind.BLIND, "1002"),
        TransferProgressed(ReferState.TRYING),
        TransferSucceeded("target_answered_customer", proof=ProofGrade.TARGET_ANSWERED),
    ]


@pytest.mark.parametrize(
    ("event", "code", "cause"),
    [
        ("rejected", None, FailureCause.TARGET_REJECTED),
        ("rejected", 486, FailureCause.TARGET_BUSY),
        (None, 486, FailureCause.TARGET_BUSY),
        (None, 603, FailureCause.TARGET_REJECTED),
        ("timeout", None, FailureCause.TARGET_NO_ANSWER),
        ("cancelled", None, FailureCause.TARGET_NO_ANSWER),
        ("error", 503, FailureCause.TARGET_UNAVAILABLE),
        (None, None, FailureCause.TRANSFER_FAILED),
    ],
)
def test_a_blind_target_that_stops_ringing_says_why_when_it_can(
    event: str | None, code: int | None, cause: FailureCause
) -> None:
    lines = started()
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 2)
    lines.update("1002", [entry("1002", DialogState.EARLY, "sip:2000@pbx")], T0 + 2.1)
    ended = DialogEntry("1002", DialogState.TERMINATED, event=event, code=code)
    out = lines.update("1002", [ended], T0 + 5)
    assert transfer_evidence(out) == [TransferFailed("target_not_answered", cause=cause)]


def consulting_while_it_rings(lines: DialogLines) -> None:
    lines.update("1002", [entry("1002", DialogState.EARLY, "sip:1001@pbx")], T0 + 2)


def test_the_agent_leaving_while_the_consult_rings_is_semi_attended() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    out = lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 3)
    out += lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    assert transfer_evidence(out) == [TransferRequested(TransferKind.SEMI_ATTENDED, "1002")]
    # Nobody has the customer yet; the target's line answering is the proof.
    out = lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 8)
    assert transfer_evidence(out) == [
        TransferSucceeded("target_answered_transfer", proof=ProofGrade.TARGET_ANSWERED)
    ]
    later = lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0 + 20)
    assert transfer_evidence(later) == []


def test_a_semi_attended_target_that_never_answers_is_a_failure() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 3)
    lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    ended = DialogEntry("1002", DialogState.TERMINATED, event="rejected")
    out = lines.update("1002", [ended], T0 + 8)
    assert transfer_evidence(out) == [
        TransferFailed("target_not_answered", cause=FailureCause.TARGET_REJECTED)
    ]


def test_a_semi_attended_target_answering_at_once_is_proof_at_once() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 3)
    out = lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 3.5)
    out += lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    assert transfer_evidence(out) == [
        TransferRequested(TransferKind.SEMI_ATTENDED, "1002"),
        TransferSucceeded("target_answered_transfer", proof=ProofGrade.TARGET_ANSWERED),
    ]


def test_a_consult_dropped_with_the_agents_call_is_no_transfer() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    out = lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 3)
    out += lines.update("1002", [entry("1002", DialogState.TERMINATED)], T0 + 3.2)
    out += lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    assert transfer_evidence(out) == []


def test_an_answered_consult_kept_by_the_target_is_consult_replaced() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 2.5)
    out = lines.update("1001", [entry("1001", DialogState.TERMINATED)], T0 + 3)
    out += lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    assert transfer_evidence(out) == [
        TransferRequested(TransferKind.ATTENDED, "1002"),
        TransferSucceeded("target_kept_consult_call", proof=ProofGrade.CONSULT_REPLACED),
    ]


def test_a_dialog_replaced_while_the_consult_rings_waits_for_the_target() -> None:
    lines = started()
    consulting_while_it_rings(lines)
    replaced = DialogEntry("1001", DialogState.TERMINATED, event="replaced")
    out = lines.update("1001", [replaced], T0 + 3)
    out += lines.expire(T0 + 3 + SETTLE_SECONDS + 0.1)
    assert transfer_evidence(out) == [TransferRequested(TransferKind.SEMI_ATTENDED, "1002")]
    out = lines.update("1002", [entry("1002", DialogState.CONFIRMED)], T0 + 6)
    assert transfer_evidence(out) == [
        TransferSucceeded("target_answered_transfer", proof=ProofGrade.TARGET_ANSWERED)
    ]


# --- the recordings of issue 15: the target rings before it answers or refuses ----------------

SUCCEEDED_BLIND = TransferSucceeded("target_answered_customer", proof=ProofGrade.TARGET_ANSWERED)
SUCCEEDED_SEMI = TransferSucceeded("target_answered_transfer", proof=ProofGrade.TARGET_ANSWERED)
REQUESTED_BLIND = [
    TransferRequested(TransferKind.BLIND, "1002"),
    TransferProgressed(ReferState.TRYING),
]
REQUESTED_SEMI = [TransferRequested(TransferKind.SEMI_ATTENDED, "1002")]
# Asterisk's hints name no cause: a target that refuses only goes idle
NOT_ANSWERED = TransferFailed("target_not_answered", cause=FailureCause.TRANSFER_FAILED)


@pytest.mark.parametrize(
    ("case", "agent", "expected"),
    [
        ("blind_ring_answer", "1001", [*REQUESTED_BLIND, SUCCEEDED_BLIND]),
        ("blind_ring_reject", "1001", [*REQUESTED_BLIND, NOT_ANSWERED]),
        ("blind_early_media_answer", "1001", [*REQUESTED_BLIND, SUCCEEDED_BLIND]),
        ("noprogress_answer", "1004", [*REQUESTED_BLIND, SUCCEEDED_BLIND]),
        ("semi_attended_answer", "1001", [*REQUESTED_SEMI, SUCCEEDED_SEMI]),
        ("semi_attended_reject", "1001", [*REQUESTED_SEMI, NOT_ANSWERED]),
    ],
)
def test_recorded_transfers_are_proved_only_by_the_target_answering(
    case: str, agent: str, expected: list[Observation]
) -> None:
    events = replay(f"asterisk22-{case}.json")
    mine = [e for e in events if e.phone == PHONES[agent]]
    assert transfer_evidence_of(mine) == expected
    # The proof is the target's line confirming: never earlier than that NOTIFY.
    confirmed = [
        e.evidence.at
        for e in events
        if e.phone == PHONES["1002"]
        and e.evidence.observation == CallStateChanged(CallState.CONNECTED)
    ]
    for e in mine:
        if isinstance(e.evidence.observation, TransferSucceeded):
            assert confirmed and e.evidence.at >= confirmed[0]
