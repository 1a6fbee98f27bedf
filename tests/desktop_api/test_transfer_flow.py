"""The seed's transfer flow and its six rules, end to end over HTTP on a real SQLite file.

Phone evidence is fed through `BridgeService.ingest` (`desktop_api/service/evidence.py`), the
same entry point the evidence queue of the HEP, AMI, dialog and desk-phone sources uses.
"""

from __future__ import annotations

from typing import Any

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    PhoneEvent,
    PhoneEvidence,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, ReferState, TransferKind
from desktop_api.testing import ApiClient, RunningBridge
from tests.conftest import STORES

pytestmark = STORES  # the same API behaviour on SQLite and on PostgreSQL

OK = "SIP/2.0 200 OK"
BLOCKED_REASON = "a transferred session must be ended with a result before new requests"


async def feed(
    bridge: RunningBridge,
    obs: Any,
    *,
    call_id: str = "call-1",
    remote: str | None = "+34900000001",
    phone: str = "sip:1001@pbx.example",
) -> None:
    """Phone evidence as a source would deliver it."""
    ev = PhoneEvidence("test-source", "2026-11-25T10:00:00.000Z", obs)
    await bridge.service.ingest(PhoneEvent(phone, ev, call_id=call_id, remote=remote))


async def session(api: ApiClient, sid: str = "s-1") -> dict[str, Any]:
    r = await api.get(f"/v1/sessions/{sid}")
    assert r.status == 200
    return r.body  # type: ignore[no-any-return]


async def test_manual_flow_through_every_screen(api: ApiClient, session_opener: Any) -> None:
    s = await session_opener(api)
    assert s["actions"] == ["transfer.open", "end"]  # seed 3: Transfer Call enabled
    expected = [
        ("open", "offered", ["transfer.dismiss", "transfer.internal", "end"]),
        ("internal", "dialing", ["transfer.dismiss", "transfer.next", "end"]),
        ("next", "confirming", ["transfer.dismiss", "transfer.confirm", "transfer.deny", "end"]),
        ("confirm", "transferred", ["transfer.acknowledge", "end"]),
        ("acknowledge", "transferred", ["end"]),
    ]
    version = s["version"]
    for action, state, actions in expected:
        r = await api.step("s-1", action)
        assert r.status == 200, r.body
        assert r.body["transfer"]["state"] == state
        assert r.body["actions"] == actions
        assert r.body["version"] == version + 1
        assert r.headers["ETag"] == f'"{version + 1}"'
        version += 1
    s = await session(api)
    assert s["status"] == "call_transferred"  # seed 10: overview says "Call transferred"
    assert s["transfer"]["confirmed_by"] == "agent"
    assert s["transfer"]["acknowledged"] is True
    # Rule 4: the session stays open until the agent ends it with a result.
    r = await api.post("/v1/sessions/s-1/end", {"result": "transferred to support"})
    assert r.status == 200
    assert r.body["status"] == "ended"
    assert r.body["result"] == "transferred to support"
    assert r.body["ended_at"] is not None
    assert r.body["actions"] == []
    audit = (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    assert [e["event"] for e in audit] == [
        "session_opened",
        "transfer.open",
        "transfer.internal",
        "transfer.next",
        "transfer.confirm",
        "transfer.acknowledge",
        "end",
    ]
    assert [e["seq"] for e in audit] == sorted(e["seq"] for e in audit)


async def test_dismiss_and_no_leave_the_one_transfer_unused(
    api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api)
    for action in ("open", "dismiss"):
        assert (await api.step("s-1", action)).status == 200
    for action in ("open", "internal", "next", "deny"):
        assert (await api.step("s-1", action)).status == 200
    s = await session(api)
    assert s["transfer"]["state"] == "none"
    assert "transfer.open" in s["actions"]
    for action in ("open", "internal", "next", "confirm"):
        assert (await api.step("s-1", action)).status == 200


async def test_rule2_feature_switched_off_for_the_account(
    admin: ApiClient, tenant_factory: Any, session_opener: Any
) -> None:
    off = await tenant_factory("offco", enabled=False)
    s = await session_opener(off.api)
    assert "transfer.open" not in s["actions"]
    assert s["transfer"]["unavailable"]["code"] == "transfer_disabled"
    r = await off.api.step("s-1", "open")
    assert r.status == 403
    assert r.body["error"]["code"] == "transfer_disabled"
    assert (await session(off.api))["version"] == s["version"]
    r = await admin.patch("/v1/accounts/offco", {"transfer_enabled": True})
    assert r.status == 200 and r.body["transfer_enabled"] is True
    s2 = await session(off.api)
    assert "transfer.open" in s2["actions"]
    assert s2["version"] > s["version"]  # desktops waiting on the session see the switch
    assert (await off.api.step("s-1", "open")).status == 200


async def test_rule3_only_while_on_a_call(api: ApiClient, session_opener: Any) -> None:
    for sid, state in (("s-none", None), ("s-ringing", "ringing")):
        s = await session_opener(api, sid, state=state)
        assert "transfer.open" not in s["actions"]
        assert s["transfer"]["unavailable"]["code"] == "not_on_call"
        r = await api.step(sid, "open")
        assert r.status == 409
        assert r.body["error"]["code"] == "not_on_call"


async def test_rule5_agent_blocked_until_transferred_session_is_ended(
    api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    await session_opener(api, "s-other", number="+34900000002")  # an open, untransferred one
    agent = (await api.get("/v1/agents/a-7")).body
    assert agent["can_take_requests"] is True and agent["blocked_reason"] is None
    for action in ("open", "internal", "next", "confirm"):
        assert (await api.step("s-1", action)).status == 200
    agent = (await api.get("/v1/agents/a-7")).body
    assert agent["can_take_requests"] is False
    assert agent["blocking_sessions"] == ["s-1"]
    assert agent["blocked_reason"] == BLOCKED_REASON  # the desktop shows this sentence
    r = await api.post(
        "/v1/sessions", {"id": "s-2", "agent_id": "a-7", "customer": {"number": "+34900000009"}}
    )
    assert r.status == 409
    assert r.body["error"]["code"] == "agent_blocked"
    assert (await api.get("/v1/sessions/s-2")).status == 404
    assert (await api.post("/v1/sessions/s-1/end", {"result": "ok"})).status == 200
    agent = (await api.get("/v1/agents/a-7")).body
    assert agent["can_take_requests"] is True
    assert agent["blocking_sessions"] == []
    await session_opener(api, "s-2", number="+34900000009")


async def test_rule6_once_per_session(api: ApiClient, session_opener: Any) -> None:
    await session_opener(api)
    for action in ("open", "internal", "next", "confirm"):
        assert (await api.step("s-1", action)).status == 200
    r = await api.step("s-1", "open")
    assert r.status == 409
    assert r.body["error"]["code"] == "already_transferred"
    s = await session(api)
    assert s["transfer"]["unavailable"]["code"] == "already_transferred"


async def test_invalid_step_names_the_state(api: ApiClient, session_opener: Any) -> None:
    await session_opener(api)
    r = await api.step("s-1", "confirm")
    assert r.status == 409
    assert r.body["error"]["code"] == "invalid_step"
    assert r.body["error"]["state"] == "none"
    await api.post("/v1/sessions/s-1/end", {"result": "done"})
    r = await api.post("/v1/sessions/s-1/end", {"result": "again"})
    assert r.status == 409
    assert r.body["error"]["code"] == "invalid_step"
    assert (await session(api))["result"] == "done"


async def test_phone_proves_blind_transfer_before_any_click(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, call_id="call-1")
    await feed(bridge, TransferRequested(TransferKind.BLIND, "1002"))
    s = await session(api)
    assert s["transfer"]["phone"]["refer"] == "requested"
    assert s["transfer"]["kind"] == "blind"
    await feed(bridge, TransferProgressed(ReferState.TRYING, "SIP/2.0 100 Trying"))
    await feed(bridge, TransferSucceeded("notify_2xx", OK))
    await feed(bridge, CallStateChanged(CallState.ENDED))
    s = await session(api)
    assert s["status"] == "call_transferred"
    assert s["transfer"]["state"] == "transferred"
    assert s["transfer"]["confirmed_by"] == "phone"
    assert s["transfer"]["phone"]["last_sipfrag"] == OK
    assert s["call"]["state"] == "ended"
    assert s["actions"] == ["transfer.acknowledge", "end"]
    assert (await api.get("/v1/agents/a-7")).body["can_take_requests"] is False
    events = [
        (e["kind"], e["event"]) for e in (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    ]
    assert events[1:] == [
        ("phone", "transfer_requested"),
        ("phone", "transfer_progress"),
        ("phone", "transfer_succeeded"),
        ("phone", "call_state"),
    ]


async def test_attended_transfer_evidence_between_clicks(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, call_id="call-1")
    await api.step("s-1", "open")
    await api.step("s-1", "internal")
    await feed(bridge, CallStateChanged(CallState.ON_HOLD))
    await feed(bridge, ConsultChanged(ConsultState.DIALING, "1002"))
    await api.step("s-1", "next")
    await feed(bridge, ConsultChanged(ConsultState.RINGING, "1002"))
    await feed(bridge, ConsultChanged(ConsultState.ANSWERED, "1002"))
    s = await session(api)
    assert s["transfer"]["phone"]["consult"] == "answered"
    assert s["call"]["state"] == "on_hold"
    await feed(bridge, TransferRequested(TransferKind.ATTENDED, "1002"))
    await feed(bridge, TransferSucceeded("dialog_replaced", OK))
    r = await api.step("s-1", "confirm")
    assert r.status == 200
    assert r.body["transfer"]["confirmed_by"] == "phone_and_agent"
    assert r.body["transfer"]["kind"] == "attended"
    assert r.body["transfer"]["conflict"] is None


async def test_manual_yes_against_phone_failure_is_a_conflict(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, call_id="call-1")
    for action in ("open", "internal", "next"):
        await api.step("s-1", action)
    await feed(bridge, TransferFailed("notify_failure", "SIP/2.0 486 Busy Here"))
    r = await api.step("s-1", "confirm")
    assert r.status == 200
    t = r.body["transfer"]
    assert t["state"] == "failed"
    assert t["conflict"]["desktop"] == "confirm"
    assert t["conflict"]["phone"] == "failed"
    assert t["conflict"]["detail"] == "SIP/2.0 486 Busy Here"
    assert r.body["status"] == "active"
    assert (await api.get("/v1/agents/a-7")).body["can_take_requests"] is True
    audit = (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    assert ("system", "conflict") in [(e["kind"], e["event"]) for e in audit]


async def test_phone_success_after_manual_no_is_a_conflict_and_the_phone_wins(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, call_id="call-1")
    for action in ("open", "internal", "next", "deny"):
        await api.step("s-1", action)
    await feed(bridge, TransferSucceeded("notify_2xx", OK))
    s = await session(api)
    assert s["transfer"]["state"] == "transferred"
    assert s["status"] == "call_transferred"
    assert s["transfer"]["conflict"]["desktop"] == "deny"
    assert s["transfer"]["conflict"]["phone"] == "succeeded"


async def test_binding_by_phone_and_customer_number(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    s = await session_opener(api, state=None)
    assert s["call"]["binding"] == "none"
    assert "transfer.open" not in s["actions"]
    # The phone's call connects after the session opened: the binding applies from then on.
    await feed(bridge, CallStateChanged(CallState.CONNECTED), call_id="abc@pbx", remote="900000001")
    s = await session(api)
    assert s["call"]["binding"] == "phone_and_number"
    assert s["call"]["sip_call_id"] == "abc@pbx"
    assert s["call"]["state"] == "connected"
    assert "transfer.open" in s["actions"]
    agent = (await api.get("/v1/agents/a-7")).body
    assert agent["current_call"]["sip_call_id"] == "abc@pbx"


async def test_session_opened_after_the_call_binds_at_once(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await feed(bridge, CallStateChanged(CallState.CONNECTED), call_id="early@pbx")
    s = await session_opener(api, state=None)
    assert s["call"]["binding"] == "phone_and_number"
    assert s["call"]["sip_call_id"] == "early@pbx"
    assert s["call"]["state"] == "connected"
    assert s["version"] == 1


async def test_ambiguous_binding_is_reported_and_manual_flow_still_works(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, "s-1")
    await session_opener(api, "s-2")  # same customer number, same agent
    await feed(bridge, CallStateChanged(CallState.CONNECTED), call_id="x@pbx")
    await feed(bridge, TransferSucceeded("notify_2xx", OK), call_id="x@pbx")
    for sid in ("s-1", "s-2"):
        s = await session(api, sid)
        assert s["call"]["binding"] == "ambiguous"
        assert s["transfer"]["state"] == "none"  # never guessed
    for action in ("open", "internal", "next", "confirm"):
        assert (await api.step("s-1", action)).status == 200


async def test_evidence_for_unknown_phones_is_counted_and_dropped(
    bridge: RunningBridge, api: ApiClient, session_opener: Any
) -> None:
    await session_opener(api, call_id="call-1")
    await feed(bridge, TransferSucceeded("notify_2xx", OK), phone="sip:9999@pbx.example")
    s = await session(api)
    assert s["transfer"]["state"] == "none"
    r = await api.get("/metrics")
    assert 'reason="unknown_phone"' in r.raw.decode()
