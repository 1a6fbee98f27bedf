"""Desk-phone parsing and per-device state, pure: the vendors' documented examples go in,
normalised events and phone evidence come out; replays and late events change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.deskphone import poly, snom, yealink
from bridge.deskphone.events import (
    CONSULT_STATE,
    CUSTOMER_STATE,
    RANK,
    TRANSFER_KINDS,
    DeskEventKind,
    DeskEventOutcome,
    DeskPhoneEvent,
    DeviceCalls,
    derive_secret,
    normalise_mac,
    number_of,
)
from bridge.errors import InvalidInput
from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    TransferFailed,
    TransferProgressed,
    TransferReported,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, FailureCause, ReferState, TransferKind

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "deskphones"
PHONE = "sip:1001@pbx.example"


def ev(
    kind: DeskEventKind, call_id: str | None = "1", remote: str | None = "900000001"
) -> DeskPhoneEvent:
    return DeskPhoneEvent("yealink", kind, mac="001565abcdef", call_id=call_id, remote=remote)


def feed(calls: DeviceCalls, event: DeskPhoneEvent) -> tuple[DeskEventOutcome, list[object]]:
    outcome, events = calls.accept(
        event, phone=PHONE, source="yealink", at="2026-01-01T00:00:00.000Z"
    )
    return outcome, [e.evidence.observation for e in events]


def test_mac_forms_are_one_device() -> None:
    assert normalise_mac("00:15:65:AB:CD:EF") == normalise_mac("0015.65ab.cdef") == "001565abcdef"
    assert normalise_mac("$mac") is None  # a variable the phone did not fill in
    with pytest.raises(InvalidInput):
        normalise_mac("00:15:65")


def test_remote_is_the_user_part_of_the_uri() -> None:
    assert number_of("sip:+34900000001@10.0.0.7") == "+34900000001"
    assert number_of('"Ana" <sip:900000001@pbx.example;user=phone>') == "900000001"
    assert number_of("20701@172.18.186.94") == "20701"
    assert number_of("$remote") is None


def test_secret_is_derived_per_account_and_device_and_rotates_with_the_key() -> None:
    a = derive_secret("k1", "acme", "001565abcdef")
    assert len(a) == 26 and a.isalnum()
    assert a == derive_secret("k1", "acme", "001565abcdef")
    assert a != derive_secret("k1", "other", "001565abcdef")
    assert a != derive_secret("k1", "acme", "001565abcdee")
    assert a != derive_secret("k2", "acme", "001565abcdef")


def test_customer_call_life_and_replays() -> None:
    calls = DeviceCalls()
    assert feed(calls, ev(DeskEventKind.INCOMING)) == (
        DeskEventOutcome.APPLIED,
        [CallStateChanged(CallState.RINGING)],
    )
    assert feed(calls, ev(DeskEventKind.INCOMING))[0] is DeskEventOutcome.DUPLICATE
    assert feed(calls, ev(DeskEventKind.ESTABLISHED))[1] == [CallStateChanged(CallState.CONNECTED)]
    late = feed(calls, ev(DeskEventKind.INCOMING))[0]  # late, would go back
    assert late is DeskEventOutcome.OUT_OF_ORDER
    assert feed(calls, ev(DeskEventKind.HOLD))[1] == [CallStateChanged(CallState.ON_HOLD)]
    assert feed(calls, ev(DeskEventKind.UNHOLD))[1] == [CallStateChanged(CallState.CONNECTED)]
    assert feed(calls, ev(DeskEventKind.HOLD))[1] == [CallStateChanged(CallState.ON_HOLD)]
    assert feed(calls, ev(DeskEventKind.TERMINATED))[1] == [CallStateChanged(CallState.ENDED)]
    assert feed(calls, ev(DeskEventKind.TERMINATED))[0] is DeskEventOutcome.DUPLICATE
    assert feed(calls, ev(DeskEventKind.ESTABLISHED))[0] is DeskEventOutcome.OUT_OF_ORDER


def test_established_before_incoming_is_taken_and_the_late_incoming_dropped() -> None:
    calls = DeviceCalls()
    assert feed(calls, ev(DeskEventKind.ESTABLISHED))[1] == [CallStateChanged(CallState.CONNECTED)]
    assert feed(calls, ev(DeskEventKind.INCOMING))[0] is DeskEventOutcome.OUT_OF_ORDER


def test_attended_transfer_consult_and_request_but_never_success() -> None:
    calls = DeviceCalls()
    feed(calls, ev(DeskEventKind.INCOMING))
    feed(calls, ev(DeskEventKind.ESTABLISHED))
    feed(calls, ev(DeskEventKind.HOLD))
    _, obs = feed(calls, ev(DeskEventKind.OUTGOING, call_id="2", remote="1002"))
    assert obs == [ConsultChanged(ConsultState.DIALING, "1002")]
    assert feed(calls, ev(DeskEventKind.ESTABLISHED, call_id="2", remote="1002"))[1] == [
        ConsultChanged(ConsultState.ANSWERED, "1002")
    ]
    assert feed(calls, ev(DeskEventKind.ATTENDED_TRANSFER, call_id="2"))[1] == [
        TransferRequested(TransferKind.ATTENDED, "1002")
    ]
    assert (
        feed(calls, ev(DeskEventKind.ATTENDED_TRANSFER, call_id="2"))[0]
        is DeskEventOutcome.DUPLICATE
    )
    feed(calls, ev(DeskEventKind.TERMINATED))
    feed(calls, ev(DeskEventKind.TERMINATED, call_id="2", remote="1002"))
    # After both legs ended, "transfer finished" still belongs to the customer's call.
    _, obs = feed(calls, ev(DeskEventKind.TRANSFER_FINISHED, call_id=None))
    assert obs == [TransferProgressed(ReferState.ACCEPTED)]
    assert (
        feed(calls, ev(DeskEventKind.TRANSFER_FAILED, call_id=None))[0]
        is DeskEventOutcome.DUPLICATE
    )


def test_blind_transfer_failure_is_failure_and_a_second_incoming_is_not_a_consult() -> None:
    calls = DeviceCalls()
    feed(calls, ev(DeskEventKind.INCOMING))
    feed(calls, ev(DeskEventKind.ESTABLISHED))
    assert (
        feed(calls, ev(DeskEventKind.INCOMING, call_id="9", remote="555"))[0]
        is DeskEventOutcome.IGNORED
    )
    assert feed(calls, ev(DeskEventKind.BLIND_TRANSFER))[1] == [
        TransferRequested(TransferKind.BLIND, None)
    ]
    outcome, obs = feed(calls, ev(DeskEventKind.TRANSFER_FAILED))
    assert outcome is DeskEventOutcome.APPLIED and isinstance(obs[0], TransferFailed)
    assert obs[0].cause is FailureCause.TRANSFER_FAILED


def test_no_desk_phone_event_claims_the_transfer_succeeded() -> None:
    """Vendors never report that the target answered: nothing here is proof or a PBX report."""
    for kind in DeskEventKind:
        calls = DeviceCalls()
        feed(calls, ev(DeskEventKind.INCOMING))
        feed(calls, ev(DeskEventKind.ESTABLISHED))
        feed(calls, ev(DeskEventKind.OUTGOING, call_id="2", remote="1002"))
        feed(calls, ev(DeskEventKind.ESTABLISHED, call_id="2", remote="1002"))
        for call_id in ("1", "2", None):
            _, obs = feed(calls, ev(kind, call_id=call_id))
            assert not [o for o in obs if isinstance(o, (TransferSucceeded, TransferReported))]


def test_events_without_a_call_are_not_guessed() -> None:
    calls = DeviceCalls()
    assert feed(calls, ev(DeskEventKind.INCOMING, call_id=None))[0] is DeskEventOutcome.NO_CALL
    assert feed(calls, ev(DeskEventKind.TRANSFER_FINISHED))[0] is DeskEventOutcome.NO_CALL
    assert feed(calls, ev(DeskEventKind.TERMINATED, call_id="77"))[0] is DeskEventOutcome.NO_CALL


def test_phone_time_stamps_order_poly_events() -> None:
    calls = DeviceCalls()
    first = DeskPhoneEvent(
        "poly", DeskEventKind.ESTABLISHED, call_id="5", remote="1", observed=20.0
    )
    late = DeskPhoneEvent("poly", DeskEventKind.HOLD, call_id="5", remote="1", observed=10.0)
    assert feed(calls, first)[0] is DeskEventOutcome.APPLIED
    assert feed(calls, late)[0] is DeskEventOutcome.OUT_OF_ORDER


def test_yealink_query_with_unfilled_variables() -> None:
    query = {"mac": "00:15:65:AB:CD:EF", "remote": "sip:900000001@10.0.0.1", "call_id": "$call_id"}
    event = yealink.parse("incoming_call", query)
    assert event == DeskPhoneEvent(
        "yealink", DeskEventKind.INCOMING, mac="001565abcdef", remote="900000001"
    )
    assert yealink.parse("held", query) is None
    with pytest.raises(KeyError):
        yealink.parse("reboot", query)


def test_snom_uses_call_dash_id_and_phone_ip() -> None:
    line = next(
        t["line"]
        for t in snom.templates("http://b/v1/devices/acme", "K")
        if "connected" in t["line"]
    )
    assert line.startswith(
        '<action_connected_url perm="R">http://b/v1/devices/acme/snom/connected?'
    )
    assert (
        "call_id=$call-id&amp;" in line
        and "ip=$phone_ip" in line
        and line.endswith("key=K</action_connected_url>")
    )


def test_yealink_templates_use_the_documented_variables() -> None:
    urls = {t["setting"]: t["url"] for t in yealink.templates("http://b/v1/devices/acme", "K")}
    assert set(urls) >= {"action_url.transfer_finished", "action_url.call_established"}
    for variable in ("$mac", "$ip", "$local", "$remote", "$call_id", "$active_user"):
        assert variable in urls["action_url.incoming_call"]
    documented = (FIXTURES / "yealink_action_url_examples.txt").read_text()
    for variable in documented.split("# Variable values: ")[1].splitlines()[0].split():
        assert variable.startswith("$")


def test_poly_documented_incoming_events_parse_but_name_no_call() -> None:
    for name in ("poly_incoming_call_event_sip31.xml", "poly_incoming_call_event_uc5.xml"):
        note = poly.parse((FIXTURES / name).read_bytes())
        assert note.mac == "0004f214b89e" and note.ip == "172.24.132.135"
        [event] = note.events
        assert event is not None
        assert (event.kind, event.remote, event.call_id) == (DeskEventKind.INCOMING, "20701", None)
        assert event.observed == pytest.approx(1215811193.0)
        assert feed(DeviceCalls(), event)[0] is DeskEventOutcome.NO_CALL


def test_poly_blank_template_is_refused() -> None:
    with pytest.raises(InvalidInput):
        poly.parse((FIXTURES / "poly_call_state_change_event_template.xml").read_bytes())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<PolycomIPPhone>",
        b"<PolycomIPPhone></PolycomIPPhone>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><PolycomIPPhone>&a;</PolycomIPPhone>',
        b"<Surprise/>",
        b"<PolycomIPPhone><IncomingCallEvent><MACAddress>zz</MACAddress></IncomingCallEvent></PolycomIPPhone>",
    ],
)
def test_poly_malformed_bodies(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        poly.parse(body)


def test_every_call_event_kind_has_a_rank_and_a_customer_state() -> None:
    call_kinds = set(DeskEventKind) - TRANSFER_KINDS
    assert set(RANK) == set(CUSTOMER_STATE) == call_kinds
    assert set(CONSULT_STATE) <= call_kinds
