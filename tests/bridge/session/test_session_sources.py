"""Several sources about one transfer (HEP capture and the PBX's AMI): one outcome, no double
counting, either source alone enough, disagreements kept in the audit trail."""

from __future__ import annotations

import itertools

import pytest

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import (
    Call,
    CallState,
    ConfirmedBy,
    ConsultState,
    Customer,
    ProofGrade,
    ReferState,
    Session,
    TransferKind,
    TransferState,
)
from bridge.session.outcome import AuditEntry
from bridge.session.phone import apply_evidence
from bridge.session.view import session_view

NOW = "2026-11-25T10:00:00.000Z"
OK = "SIP/2.0 200 OK"
BUSY = "SIP/2.0 486 Busy Here"


def at(seconds: float) -> str:
    return f"2026-11-25T10:00:{seconds:06.3f}Z"


def new_session() -> Session:
    return Session(
        "acme", "s-1", "a-7", Customer("2000"), NOW, call=Call(state=CallState.CONNECTED)
    )


def feed(s: Session, *items: tuple[str, float, Observation]) -> tuple[Session, list[AuditEntry]]:
    trail: list[AuditEntry] = []
    for source, seconds, obs in items:
        # Here each source's clock agrees with the bridge's; see the skew test below.
        outcome = apply_evidence(s, PhoneEvidence(source, at(seconds), obs), now=at(seconds))
        s = outcome.session
        trail.extend(outcome.audit)
    return s, trail


REQ = TransferRequested(TransferKind.BLIND, "1002")
ACCEPTED = TransferProgressed(ReferState.ACCEPTED, "SIP/2.0 202 Accepted")
HEP_OK = TransferSucceeded("target_leg_answered", OK)
AMI_OK = TransferSucceeded("pbx_target_answered")
HEP_BUSY = TransferFailed("notify_failure", BUSY)
AMI_BUSY = TransferFailed("pbx_dial_busy")


def ignored(trail: list[AuditEntry]) -> list[str | None]:
    return [e.detail.get("ignored") for e in trail if e.kind == "phone"]


def disagreements(trail: list[AuditEntry]) -> list[dict[str, object]]:
    return [e.detail for e in trail if e.event == "sources_disagree"]


class TestOneOutcome:
    def test_both_sources_prove_success_once(self) -> None:
        s, trail = feed(
            new_session(),
            ("hep", 1.0, REQ),
            ("ami", 1.001, REQ),
            ("hep", 1.01, ACCEPTED),
            ("ami", 1.01, ACCEPTED),
            ("hep", 3.0, HEP_OK),
            ("ami", 3.002, AMI_OK),
        )
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE
        assert s.transfer.phone.proved_by == "hep"
        assert s.transfer.phone.final_at == at(3.0)
        assert ignored(trail)[-1] == "duplicate"
        assert disagreements(trail) == []
        assert len(trail) == 6  # every piece of evidence is in the trail

    def test_the_slower_source_request_after_the_outcome_changes_nothing(self) -> None:
        s, trail = feed(new_session(), ("hep", 1.0, REQ), ("hep", 3.0, HEP_BUSY))
        before = s
        s, trail = feed(s, ("ami", 3.1, REQ), ("ami", 3.1, ACCEPTED), ("ami", 3.2, AMI_BUSY))
        assert s == before  # failed by hep; ami's report of the same attempt is audit only
        assert ignored(trail) == ["same_attempt_other_source", "after_final", "duplicate"]

    def test_either_source_alone_is_enough(self) -> None:
        for source, proof in (("hep", HEP_OK), ("ami", AMI_OK)):
            s, _ = feed(new_session(), (source, 1.0, REQ), (source, 3.0, proof))
            assert s.transfer.state is TransferState.TRANSFERRED
            assert s.transfer.phone.proved_by == source

    def test_a_new_attempt_after_a_failure_is_not_mistaken_for_the_old_one(self) -> None:
        s, _ = feed(new_session(), ("hep", 1.0, REQ), ("hep", 3.0, HEP_BUSY))
        s, trail = feed(s, ("ami", 30.0, REQ), ("ami", 45.0, AMI_OK))
        assert ignored(trail) == [None, None]
        assert s.transfer.state is TransferState.TRANSFERRED
        assert disagreements(trail) == []


class TestDisagreement:
    def test_failure_after_proved_success_is_kept_and_success_stands(self) -> None:
        s, _ = feed(new_session(), ("hep", 1.0, REQ), ("hep", 3.0, HEP_OK))
        after, trail = feed(s, ("ami", 3.1, AMI_BUSY))
        assert after == s
        assert disagreements(trail) == [
            {"kept": "succeeded", "kept_source": "hep", "other": "failed", "other_source": "ami"}
        ]

    def test_success_after_failure_of_the_same_attempt_wins_and_is_kept(self) -> None:
        s, trail = feed(
            new_session(), ("ami", 1.0, REQ), ("ami", 3.0, AMI_BUSY), ("hep", 3.1, HEP_OK)
        )
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.phone.proved_by == "hep"
        assert disagreements(trail) == [
            {"kept": "succeeded", "kept_source": "hep", "other": "failed", "other_source": "ami"}
        ]

    def test_same_source_repeating_itself_is_not_a_disagreement(self) -> None:
        s, trail = feed(new_session(), ("hep", 1.0, REQ), ("hep", 3.0, HEP_OK))
        _, trail = feed(s, ("hep", 3.1, HEP_BUSY))
        assert disagreements(trail) == []
        assert ignored(trail) == ["after_success"]


class TestStaleReports:
    def test_consult_progress_never_goes_backwards(self) -> None:
        s, trail = feed(
            new_session(),
            ("hep", 1.0, ConsultChanged(ConsultState.DIALING, "1002")),
            ("hep", 1.5, ConsultChanged(ConsultState.ANSWERED, "1002")),
            ("ami", 1.6, ConsultChanged(ConsultState.RINGING, "1002")),
        )
        assert s.transfer.phone.consult is ConsultState.ANSWERED
        assert ignored(trail)[-1] == "stale"

    def test_a_new_consult_may_start_after_one_ended(self) -> None:
        s, trail = feed(
            new_session(),
            ("hep", 1.0, ConsultChanged(ConsultState.ANSWERED, "1002")),
            ("hep", 2.0, ConsultChanged(ConsultState.ENDED)),
            ("ami", 2.1, ConsultChanged(ConsultState.ANSWERED, "1002")),
            ("hep", 9.0, ConsultChanged(ConsultState.DIALING, "1003")),
        )
        assert ignored(trail) == [None, None, "stale", None]
        assert s.transfer.phone.consult is ConsultState.DIALING
        assert s.transfer.target == "1003"

    def test_an_ended_call_is_not_revived_by_a_late_report(self) -> None:
        s, trail = feed(
            new_session(),
            ("hep", 1.0, CallStateChanged(CallState.ENDED)),
            ("ami", 1.1, CallStateChanged(CallState.CONNECTED)),
        )
        assert s.call.state is CallState.ENDED
        assert ignored(trail) == [None, "after_call_ended"]


def interleavings(a: list[Item], b: list[Item]) -> list[list[Item]]:
    """Every order in which two sources' reports can reach the bridge, each source's own
    reports in their order."""
    n = len(a) + len(b)
    out = []
    for slots in itertools.combinations(range(n), len(b)):
        first, second = iter(a), iter(b)
        out.append([next(second) if i in slots else next(first) for i in range(n)])
    return out


def view_after(order: list[Item]) -> dict[str, object]:
    """The API view of the transfer once every report was applied in this order; each report
    keeps its source's own time, the bridge's clock runs on."""
    s = new_session()
    for n, (source, seconds, obs) in enumerate(order):
        evidence = PhoneEvidence(source, at(seconds), obs)
        s = apply_evidence(s, evidence, now=at(20 + n)).session
    view: dict[str, object] = session_view(s, True)["transfer"]
    return view


Item = tuple[str, float, Observation]
TRYING = TransferProgressed(ReferState.TRYING, "SIP/2.0 100 Trying")
RINGING_FRAG = TransferProgressed(ReferState.TRYING, "SIP/2.0 180 Ringing")
ATTENDED = TransferRequested(TransferKind.ATTENDED, "1002")
HEP_ATTENDED: list[Item] = [
    ("hep", 1.0, ATTENDED),
    ("hep", 1.01, TransferProgressed(ReferState.ACCEPTED)),
    ("hep", 1.02, TRYING),
    ("hep", 1.3, TransferSucceeded("notify_2xx_consult_answered", OK, ProofGrade.CONSULT_REPLACED)),
]
AMI_ATTENDED: list[Item] = [
    ("ami", 1.001, ATTENDED),
    ("ami", 1.25, TransferSucceeded("pbx_attended_transfer", None, ProofGrade.CONSULT_REPLACED)),
]
HEP_BLIND: list[Item] = [
    ("hep", 1.0, REQ),
    ("hep", 1.01, TransferProgressed(ReferState.ACCEPTED)),
    ("hep", 1.02, TRYING),
    ("hep", 1.5, RINGING_FRAG),
    ("hep", 3.0, TransferSucceeded("target_leg_answered", None, ProofGrade.TARGET_ANSWERED)),
    ("hep", 3.01, TransferReported("notify_2xx", OK)),
]
AMI_BLIND: list[Item] = [
    ("ami", 1.001, REQ),
    ("ami", 1.002, TransferProgressed(ReferState.ACCEPTED)),
    ("ami", 3.002, TransferSucceeded("pbx_target_answered", None, ProofGrade.TARGET_ANSWERED)),
]
HEP_BUSY_FLOW: list[Item] = [("hep", 1.0, REQ), ("hep", 1.02, TRYING), ("hep", 2.0, HEP_BUSY)]
AMI_BUSY_FLOW: list[Item] = [("ami", 1.001, REQ), ("ami", 1.9, AMI_BUSY)]


class TestTheViewDoesNotDependOnWhichSourceCameFirst:
    def test_a_final_sipfrag_replaces_trying_after_amis_success_came_first(self) -> None:
        """The issue's order: AMI's AttendedTransfer success, then HEP's 100 and 200."""
        order = [*AMI_ATTENDED, *HEP_ATTENDED]
        assert view_after(order)["phone"]["last_sipfrag"] == OK  # type: ignore[index]

    @pytest.mark.parametrize(
        ("hep", "ami", "sipfrag"),
        [
            (HEP_ATTENDED, AMI_ATTENDED, OK),
            (HEP_BLIND, AMI_BLIND, OK),
            (HEP_BUSY_FLOW, AMI_BUSY_FLOW, BUSY),
        ],
        ids=["attended", "blind", "busy"],
    )
    def test_every_interleaving_of_hep_and_ami_gives_one_view(
        self, hep: list[Item], ami: list[Item], sipfrag: str
    ) -> None:
        views = [view_after(order) for order in interleavings(hep, ami)]
        assert len(views) >= 10
        assert all(v == views[0] for v in views), [v for v in views if v != views[0]][:1]
        phone = views[0]["phone"]
        assert phone["last_sipfrag"] == sipfrag  # type: ignore[index]
        # The source whose own clock saw the outcome first is named, whichever arrived first.
        earliest = min(
            (seconds, source)
            for source, seconds, obs in hep + ami
            if isinstance(obs, TransferSucceeded | TransferFailed)
        )
        assert phone["proved_by"] == earliest[1]  # type: ignore[index]
        assert phone["final_at"] == at(earliest[0])  # type: ignore[index]
