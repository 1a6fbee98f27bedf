"""The seed's flow and rules on the pure state machine: no event loop, no I/O."""

from __future__ import annotations

import pytest

from bridge.errors import TransferNotAllowed
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    Observation,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import (
    Action,
    Call,
    CallState,
    ConfirmedBy,
    ConsultState,
    Customer,
    ReferState,
    Session,
    SessionStatus,
    TransferKind,
    TransferState,
)
from bridge.session.machine import available_actions, desktop_step, end_session
from bridge.session.outcome import Outcome
from bridge.session.phone import apply_evidence

NOW = "2026-11-25T10:00:00.000Z"
OK = "SIP/2.0 200 OK"
BUSY = "SIP/2.0 486 Busy Here"


def new_session(call: CallState = CallState.CONNECTED) -> Session:
    return Session("acme", "s-1", "a-7", Customer("+34900000001"), NOW, call=Call(state=call))


def step(s: Session, *actions: str, enabled: bool = True) -> Session:
    for action in actions:
        s = desktop_step(s, Action(action), transfer_enabled=enabled, now=NOW).session
    return s


def phone(s: Session, obs: Observation) -> Outcome:
    return apply_evidence(s, PhoneEvidence("test", NOW, obs), now=NOW)


def refused(s: Session, action: str, *, enabled: bool = True) -> TransferNotAllowed:
    with pytest.raises(TransferNotAllowed) as info:
        desktop_step(s, Action(action), transfer_enabled=enabled, now=NOW)
    return info.value


SUCCESS = TransferSucceeded("notify_2xx", OK)
FAILURE = TransferFailed("notify_failure", BUSY)


class TestDesktopSteps:
    def test_full_manual_flow_through_every_seed_step(self) -> None:
        s = new_session()
        assert available_actions(s, True) == ["transfer.open", "end"]
        s = step(s, "open")
        assert s.transfer.state is TransferState.OFFERED
        assert available_actions(s, True) == ["transfer.dismiss", "transfer.internal", "end"]
        s = step(s, "internal")
        assert s.transfer.state is TransferState.DIALING
        assert available_actions(s, True) == ["transfer.dismiss", "transfer.next", "end"]
        s = step(s, "next")
        assert s.transfer.state is TransferState.CONFIRMING
        assert available_actions(s, True) == [
            "transfer.dismiss",
            "transfer.confirm",
            "transfer.deny",
            "end",
        ]
        s = step(s, "confirm")
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.AGENT
        assert s.status is SessionStatus.CALL_TRANSFERRED  # rule 4: still open
        assert available_actions(s, True) == ["transfer.acknowledge", "end"]
        s = step(s, "acknowledge")
        assert s.transfer.acknowledged
        assert available_actions(s, True) == ["end"]
        assert s.version == 6

    @pytest.mark.parametrize(
        "before", [["open"], ["open", "internal"], ["open", "internal", "next"]]
    )
    def test_dismiss_returns_to_none_from_every_open_screen(self, before: list[str]) -> None:
        s = step(new_session(), *before, "dismiss")
        assert s.transfer.state is TransferState.NONE
        assert "transfer.open" in available_actions(s, True)

    def test_deny_returns_to_none_and_does_not_use_up_the_transfer(self) -> None:
        s = step(new_session(), "open", "internal", "next", "deny")
        assert s.transfer.state is TransferState.NONE
        s = step(s, "open", "internal", "next", "confirm")
        assert s.transfer.state is TransferState.TRANSFERRED

    def test_rule2_feature_switched_off_refuses_open(self) -> None:
        err = refused(new_session(), "open", enabled=False)
        assert err.code == "transfer_disabled"
        assert "transfer.open" not in available_actions(new_session(), False)

    @pytest.mark.parametrize("call", [CallState.NONE, CallState.RINGING, CallState.ENDED])
    def test_rule3_open_needs_a_connected_call(self, call: CallState) -> None:
        assert refused(new_session(call), "open").code == "not_on_call"
        assert "transfer.open" not in available_actions(new_session(call), True)

    def test_rule3_on_hold_still_counts_as_on_the_call(self) -> None:
        assert step(new_session(CallState.ON_HOLD), "open").transfer.state is TransferState.OFFERED

    def test_internal_refused_when_customer_left_after_open(self) -> None:
        s = step(new_session(), "open")
        s = phone(s, CallStateChanged(CallState.ENDED)).session
        assert refused(s, "internal").code == "not_on_call"
        assert available_actions(s, True) == ["transfer.dismiss", "end"]

    def test_rule6_once_per_session(self) -> None:
        s = step(new_session(), "open", "internal", "next", "confirm")
        assert refused(s, "open").code == "already_transferred"

    @pytest.mark.parametrize(
        ("before", "action", "state"),
        [
            ([], "internal", "none"),
            ([], "next", "none"),
            ([], "confirm", "none"),
            ([], "deny", "none"),
            ([], "dismiss", "none"),
            ([], "acknowledge", "none"),
            (["open"], "open", "offered"),
            (["open"], "next", "offered"),
            (["open"], "confirm", "offered"),
            (["open", "internal"], "internal", "dialing"),
            (["open", "internal"], "confirm", "dialing"),
            (["open", "internal", "next"], "next", "confirming"),
            (["open", "internal", "next", "confirm"], "dismiss", "transferred"),
            (["open", "internal", "next", "confirm"], "deny", "transferred"),
        ],
    )
    def test_steps_that_do_not_fit_are_invalid_and_name_the_state(
        self, before: list[str], action: str, state: str
    ) -> None:
        s = step(new_session(), *before)
        err = refused(s, action)
        assert err.code == "invalid_step"
        assert err.state == state

    def test_acknowledge_twice_changes_nothing(self) -> None:
        s = step(new_session(), "open", "internal", "next", "confirm", "acknowledge")
        out = desktop_step(s, Action.ACKNOWLEDGE, transfer_enabled=True, now=NOW)
        assert not out.changed
        assert out.session.version == s.version

    def test_end_sets_result_and_ends(self) -> None:
        s = step(new_session(), "open", "internal", "next", "confirm")
        out = end_session(s, "transferred to support", now=NOW)
        assert out.session.status is SessionStatus.ENDED
        assert out.session.result == "transferred to support"
        assert available_actions(out.session, True) == []
        with pytest.raises(TransferNotAllowed) as info:
            end_session(out.session, "again", now=NOW)
        assert info.value.code == "invalid_step"
        assert refused(out.session, "open").code == "invalid_step"

    def test_every_change_grows_the_version_and_is_audited(self) -> None:
        s = new_session()
        out = desktop_step(s, Action.OPEN, transfer_enabled=True, now=NOW)
        assert out.session.version == s.version + 1
        assert [(e.kind, e.event) for e in out.audit] == [("desktop", "transfer.open")]


class TestPhoneEvidence:
    def test_success_before_any_click_transfers_with_phone_as_proof(self) -> None:
        s = new_session()
        s = phone(s, TransferRequested(TransferKind.BLIND, "1002")).session
        assert s.transfer.phone.refer is ReferState.REQUESTED
        assert s.transfer.state is TransferState.NONE
        s = phone(s, TransferProgressed(ReferState.TRYING, "SIP/2.0 100 Trying")).session
        s = phone(s, SUCCESS).session
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE
        assert s.transfer.kind is TransferKind.BLIND
        assert s.transfer.target == "1002"
        assert s.transfer.phone.last_sipfrag == OK
        assert s.status is SessionStatus.CALL_TRANSFERRED
        # The questions the phone answered are not asked any more.
        assert available_actions(s, True) == ["transfer.acknowledge", "end"]
        assert refused(s, "open").code == "already_transferred"

    def test_success_while_confirming_then_yes_is_phone_and_agent(self) -> None:
        s = step(new_session(), "open", "internal", "next")
        s = phone(s, SUCCESS).session
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE
        s = step(s, "confirm")
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE_AND_AGENT
        assert s.transfer.conflict is None

    def test_yes_then_phone_success_is_phone_and_agent(self) -> None:
        s = step(new_session(), "open", "internal", "next", "confirm")
        s = phone(s, SUCCESS).session
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE_AND_AGENT
        assert s.transfer.conflict is None

    def test_failure_then_yes_is_a_conflict_and_the_phone_wins(self) -> None:
        s = step(new_session(), "open", "internal", "next")
        s = phone(s, FAILURE).session
        assert s.transfer.state is TransferState.FAILED
        out = desktop_step(s, Action.CONFIRM, transfer_enabled=True, now=NOW)
        s = out.session
        assert s.transfer.state is TransferState.FAILED
        assert s.transfer.conflict is not None
        assert (s.transfer.conflict.desktop, s.transfer.conflict.phone) == ("confirm", "failed")
        assert s.transfer.conflict.detail == BUSY
        assert s.status is SessionStatus.ACTIVE
        assert ("system", "conflict") in [(e.kind, e.event) for e in out.audit]

    def test_yes_then_failure_is_a_conflict_and_the_transfer_is_not_used_up(self) -> None:
        s = step(new_session(), "open", "internal", "next", "confirm", "acknowledge")
        assert s.status is SessionStatus.CALL_TRANSFERRED
        s = phone(s, FAILURE).session
        assert s.transfer.state is TransferState.FAILED
        assert s.status is SessionStatus.ACTIVE
        assert s.transfer.conflict is not None
        assert s.transfer.conflict.desktop == "confirm"
        assert s.transfer.confirmed_by is None
        assert "transfer.open" in available_actions(s, True)  # rule 6: failed does not count

    def test_no_then_phone_success_is_a_conflict_and_the_phone_wins(self) -> None:
        s = step(new_session(), "open", "internal", "next", "deny")
        s = phone(s, SUCCESS).session
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.confirmed_by is ConfirmedBy.PHONE
        assert s.transfer.conflict is not None
        assert (s.transfer.conflict.desktop, s.transfer.conflict.phone) == ("deny", "succeeded")

    def test_phone_success_then_no_is_a_conflict_and_the_phone_wins(self) -> None:
        s = step(new_session(), "open", "internal", "next")
        s = phone(s, SUCCESS).session
        s = step(s, "deny")
        assert s.transfer.state is TransferState.TRANSFERRED
        assert s.transfer.conflict is not None
        assert s.transfer.conflict.desktop == "deny"

    def test_failure_leaves_a_new_attempt_possible(self) -> None:
        s = phone(new_session(), FAILURE).session
        assert s.transfer.state is TransferState.FAILED
        assert available_actions(s, True)[0] == "transfer.open"
        s = step(s, "open")
        assert s.transfer.state is TransferState.OFFERED
        assert s.transfer.phone.refer is ReferState.NONE
        assert s.transfer.conflict is None

    def test_duplicate_evidence_changes_nothing_but_is_audited(self) -> None:
        s = phone(new_session(), SUCCESS).session
        out = phone(s, SUCCESS)
        assert not out.changed
        assert out.session.version == s.version
        assert out.audit[0].detail["ignored"] == "duplicate"

    def test_failure_after_phone_success_does_not_undo_it(self) -> None:
        s = phone(new_session(), SUCCESS).session
        out = phone(s, FAILURE)
        assert not out.changed
        assert out.session.transfer.state is TransferState.TRANSFERRED
        assert out.audit[0].detail["ignored"] == "after_success"

    def test_evidence_after_end_is_audited_only(self) -> None:
        s = end_session(new_session(), "done", now=NOW).session
        out = phone(s, SUCCESS)
        assert not out.changed
        assert out.session.status is SessionStatus.ENDED
        assert out.audit[0].detail["ignored"] == "session_ended"

    def test_consult_progress_and_call_state(self) -> None:
        s = new_session()
        s = phone(s, CallStateChanged(CallState.ON_HOLD)).session
        assert s.call.state is CallState.ON_HOLD
        for state in (ConsultState.DIALING, ConsultState.RINGING, ConsultState.ANSWERED):
            s = phone(s, ConsultChanged(state, "1002")).session
            assert s.transfer.phone.consult is state
        assert s.transfer.target == "1002"
        same = phone(s, ConsultChanged(ConsultState.ANSWERED, "1002"))
        assert not same.changed

    def test_progress_after_final_is_ignored(self) -> None:
        s = phone(new_session(), FAILURE).session
        out = phone(s, TransferProgressed(ReferState.TRYING, "SIP/2.0 100 Trying"))
        assert not out.changed

    def test_second_transfer_request_after_phone_success_is_ignored(self) -> None:
        s = phone(new_session(), SUCCESS).session
        out = phone(s, TransferRequested(TransferKind.BLIND, "1003"))
        assert not out.changed
        assert out.audit[0].detail["ignored"] == "already_transferred"


ORDERS = [
    # (clicks before evidence, clicks after evidence)
    ([], ["acknowledge"]),
    (["open"], ["acknowledge"]),
    (["open", "internal"], ["acknowledge"]),
    (["open", "internal", "next"], ["confirm", "acknowledge"]),
    (["open", "internal", "next", "confirm"], ["acknowledge"]),
    (["open", "internal", "next", "confirm", "acknowledge"], []),
]


@pytest.mark.parametrize(("before", "after"), ORDERS)
def test_success_evidence_at_any_point_of_the_clicks_ends_transferred(
    before: list[str], after: list[str]
) -> None:
    s = step(new_session(), *before)
    s = phone(s, SUCCESS).session
    s = step(s, *after)
    assert s.transfer.state is TransferState.TRANSFERRED
    assert s.status is SessionStatus.CALL_TRANSFERRED
    assert s.transfer.confirmed_by in (ConfirmedBy.PHONE, ConfirmedBy.PHONE_AND_AGENT)
    assert s.transfer.acknowledged
    assert s.transfer.conflict is None


@pytest.mark.parametrize(
    "before", [[], ["open"], ["open", "internal"], ["open", "internal", "next"]]
)
def test_failure_evidence_at_any_point_before_yes_ends_failed_without_conflict(
    before: list[str],
) -> None:
    s = step(new_session(), *before)
    s = phone(s, FAILURE).session
    assert s.transfer.state is TransferState.FAILED
    assert s.transfer.conflict is None
    assert s.status is SessionStatus.ACTIVE
