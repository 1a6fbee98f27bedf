"""The transfer steps and the end of a session, with and without phone evidence, validated
against the document."""

from __future__ import annotations

from bridge.evidence import (
    CallStateChanged,
    ConsultChanged,
    TransferFailed,
    TransferProgressed,
    TransferRequested,
    TransferSucceeded,
)
from bridge.model import CallState, ConsultState, FailureCause, ProofGrade, ReferState, TransferKind
from desktop_api.testing import ApiClient, RunningBridge
from tests.desktop_api.openapi.checker import HUGE, JSON, Checker, assert_covers, evidence
from tests.desktop_api.openapi.conftest import S1, put_agent, steps
from tests.desktop_api.openapi.coverage import COVERS

STEP = "/v1/sessions/s-1/transfer"
BLOCKED_REASON = "a transferred session must be ended with a result before new requests"

CONSULT_REPLACED = ProofGrade.CONSULT_REPLACED


async def test_transfer_steps_of_the_seed_flow(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    """Steps 3-10 on s-1: offer, choose, dial, confirm, acknowledge; then once only."""
    c, api = checker, acme
    r = await c.call(api, "POST", STEP, {"action": "open"}, expect=200)
    assert r.body["transfer"]["state"] == "offered"
    r = await c.call(api, "POST", STEP, {"action": "next"}, expect=409, code="invalid_step")
    assert r.body["error"]["state"] == "offered"
    await c.call(api, "POST", STEP, {"action": "open"}, expect=409, code="invalid_step")
    body = await steps(c, api, "s-1", "internal", "next", "confirm", "acknowledge", "acknowledge")
    assert body["status"] == "call_transferred"
    assert body["transfer"]["confirmed_by"] == "agent"
    assert body["transfer"]["unavailable"]["code"] == "already_transferred"
    await c.call(api, "POST", STEP, {"action": "open"}, expect=409, code="already_transferred")
    r = await c.call(api, "GET", "/v1/agents/a-7", expect=200)
    assert r.body["blocking_sessions"] == ["s-1"] and r.body["blocked_reason"] == BLOCKED_REASON
    assert r.body["current_call"]["session_id"] == "s-1"
    await c.call(api, "POST", "/v1/sessions", {**S1, "id": "s-2"}, expect=409, code="agent_blocked")
    bad_steps: list[tuple[bytes, str]] = [
        (b'{"action": "fly"}', "unknown_action"),
        (b'{"action": 7}', "unknown_action"),
        (b"{}", "missing_field"),
        (b'{"action": "open", "why": 1}', "unknown_field"),
        (b"nope", "invalid_json"),
        (b"[]", "invalid_body"),
    ]
    for raw, code in bad_steps:
        await c.call(
            api, "POST", STEP, raw=raw, headers=JSON, expect=400, code=code, request_ok=False
        )
    await c.call(api, "POST", "/v1/sessions/nope/transfer", {"action": "open"}, expect=404)
    await c.call(admin, "POST", STEP, {"action": "open"}, expect=403, code="forbidden")
    await c.call(anon, "POST", STEP, {"action": "open"}, expect=401, request_ok=False)
    await c.call(api, "POST", STEP, HUGE, expect=413, request_ok=False)
    assert_covers(c, COVERS["transfer_steps"])


async def test_end_a_transferred_session(
    checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient, s1: None
) -> None:
    c, api = checker, acme
    await steps(c, api, "s-1", "open", "internal", "next", "confirm")
    end = "/v1/sessions/s-1/end"
    for body, code in (
        ({}, "missing_field"),
        ({"result": " "}, "invalid_field"),
        ({"result": "x" * 501}, "invalid_field"),
        ({"result": "ok", "note": 1}, "unknown_field"),
    ):
        await c.call(api, "POST", end, body, expect=400, code=code, request_ok=False)
    r = await c.call(api, "POST", end, {"result": "transferred to sales"}, expect=200)
    assert r.body["status"] == "ended" and r.body["actions"] == []
    assert r.body["transfer"]["unavailable"]["code"] == "invalid_step"
    r = await c.call(api, "POST", end, {"result": "again"}, expect=409, code="invalid_step")
    assert r.body["error"]["state"] == "ended"
    await c.call(api, "POST", STEP, {"action": "dismiss"}, expect=409, code="invalid_step")
    await c.call(api, "POST", "/v1/sessions/nope/end", {"result": "x"}, expect=404)
    await c.call(admin, "POST", end, {"result": "x"}, expect=403)
    await c.call(anon, "POST", end, {"result": "x"}, expect=401, request_ok=False)
    await c.call(api, "POST", end, HUGE, expect=413, request_ok=False)
    await c.call(api, "GET", "/v1/sessions/s-1", expect=200)  # an ended session, from the store
    assert_covers(c, COVERS["end"])


async def test_not_on_call_dismiss_and_deny(checker: Checker, acme: ApiClient, ana: None) -> None:
    c, api = checker, acme
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-3", "agent_id": "a-7", "customer": {"number": "+34900000003"}},
        expect=201,
    )
    assert r.body["call"]["state"] == "none" and r.body["call"]["since"] is None
    assert r.body["transfer"]["unavailable"]["code"] == "not_on_call"
    await c.call(
        api,
        "POST",
        "/v1/sessions/s-3/transfer",
        {"action": "open"},
        expect=409,
        code="not_on_call",
    )
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-4",
            "agent_id": "a-7",
            "customer": {"number": "+34900000004"},
            "call": {"state": "ringing", "sip_call_id": "c-4"},
        },
        expect=201,
    )
    assert r.body["call"]["binding"] == "call_id"
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-5",
            "agent_id": "a-7",
            "customer": {"number": "+34900000005", "name": None},
            "call": {"state": "connected", "sip_call_id": None},
        },
        expect=201,
    )
    body = await steps(c, api, "s-5", "open", "dismiss", "open", "internal", "next", "deny")
    assert body["transfer"]["state"] == "none"
    assert_covers(c, COVERS["not_on_call"])


async def test_the_account_switch_turns_transfer_off_and_on(
    checker: Checker, admin: ApiClient, off: ApiClient, acme: ApiClient, s1: None
) -> None:
    c = checker
    await c.call(
        off,
        "PUT",
        "/v1/agents/z-1",
        {"name": "Zoe", "phone": {"sip_uri": "sip:3001@pbx.example"}},
        expect=201,
    )
    r = await c.call(
        off,
        "POST",
        "/v1/sessions",
        {
            "id": "o-1",
            "agent_id": "z-1",
            "customer": {"number": "+34900000011"},
            "call": {"state": "connected"},
        },
        expect=201,
    )
    assert r.body["transfer"]["unavailable"]["code"] == "transfer_disabled"
    await c.call(
        off,
        "POST",
        "/v1/sessions/o-1/transfer",
        {"action": "open"},
        expect=403,
        code="transfer_disabled",
    )
    await c.call(admin, "PATCH", "/v1/accounts/off", {"transfer_enabled": True}, expect=200)
    r = await c.call(off, "GET", "/v1/sessions/o-1", expect=200)
    assert "transfer.open" in r.body["actions"] and r.body["version"] == 2
    await c.call(off, "GET", "/v1/sessions/s-1", expect=404)  # another account's session
    assert_covers(c, COVERS["transfer_disabled"])


async def test_phone_evidence_binds_the_call_proves_the_transfer_and_outlasts_a_late_no(
    bridge: RunningBridge, checker: Checker, acme: ApiClient
) -> None:
    c, api, service = checker, acme, bridge.service
    await put_agent(c, api, "a-8", "1002")
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-10", "agent_id": "a-8", "customer": {"number": "+34900000010"}},
        expect=201,
    )
    phone8 = "sip:1002@pbx.example"
    await service.ingest(
        evidence(phone8, CallStateChanged(CallState.CONNECTED), "c-10", "900000010")
    )
    r = await c.call(api, "GET", "/v1/sessions/s-10", expect=200)
    assert r.body["call"] | {"since": None} == {
        "state": "connected",
        "sip_call_id": "c-10",
        "since": None,
        "binding": "phone_and_number",
        "candidates": [],
    }
    await steps(c, api, "s-10", "open", "internal", "next")
    for observation in (
        ConsultChanged(ConsultState.ANSWERED, "1003"),
        TransferRequested(TransferKind.ATTENDED, "1003"),
        TransferProgressed(ReferState.ACCEPTED, "SIP/2.0 202 Accepted"),
        TransferSucceeded("notify_2xx_consult_answered", "SIP/2.0 200 OK", CONSULT_REPLACED),
    ):
        await service.ingest(evidence(phone8, observation, "c-10"))
    # the same report seen again later (a second NOTIFY): audit only
    again = TransferSucceeded("notify_2xx_consult_answered", "SIP/2.0 200 OK", CONSULT_REPLACED)
    await service.ingest(evidence(phone8, again, "c-10", at="2026-01-01T00:00:01.000Z"))
    # the very same event twice (one capture sent to two instances): applied once, no trace
    trail = await c.call(api, "GET", "/v1/sessions/s-10/audit", expect=200)
    await service.ingest(evidence(phone8, again, "c-10", at="2026-01-01T00:00:01.000Z"))
    again_trail = await c.call(api, "GET", "/v1/sessions/s-10/audit", expect=200)
    assert again_trail.body["entries"] == trail.body["entries"]
    transfer = (await steps(c, api, "s-10", "deny"))["transfer"]
    assert transfer["state"] == "transferred" and transfer["confirmed_by"] == "phone"
    assert transfer["kind"] == "attended" and transfer["target"] == "1003"
    assert transfer["conflict"]["desktop"] == "deny"
    assert transfer["phone"] == {
        "consult": "answered",
        "refer": "succeeded",
        "last_sipfrag": "SIP/2.0 200 OK",
        "proved_by": "hep",
        "final_at": "2026-01-01T00:00:00.000Z",
        "proof": "consult_replaced",
        "proof_reason": "notify_2xx_consult_answered",
        "failure": None,
        "handoff_at": "2026-01-01T00:00:00.000Z",
        "pbx_reported_at": None,
    }
    r = await c.call(api, "GET", "/v1/agents/a-8", expect=200)
    assert r.body["current_call"] == {
        "session_id": "s-10",
        "state": "connected",
        "sip_call_id": "c-10",
    }
    r = await c.call(api, "GET", "/v1/sessions/s-10/audit", expect=200)
    kinds = {e["kind"] for e in r.body["entries"]}
    assert kinds == {"desktop", "phone", "system"}
    assert any("ignored" in e["detail"] for e in r.body["entries"])


async def test_a_phone_failure_after_the_agents_yes_is_a_conflict_and_reopens_the_transfer(
    bridge: RunningBridge, checker: Checker, acme: ApiClient
) -> None:
    c, api = checker, acme
    await put_agent(c, api, "a-9", "1004")
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-11",
            "agent_id": "a-9",
            "customer": {"number": "+34900000011"},
            "call": {"state": "connected", "sip_call_id": "c-11"},
        },
        expect=201,
    )
    await steps(c, api, "s-11", "open", "internal", "next", "confirm")
    await bridge.service.ingest(
        evidence(
            "sip:1004@pbx.example",
            TransferFailed("notify_failure", "SIP/2.0 486 Busy Here", FailureCause.TARGET_BUSY),
            "c-11",
        )
    )
    r = await c.call(api, "GET", "/v1/sessions/s-11", expect=200)
    assert r.body["transfer"]["state"] == "failed"
    assert r.body["transfer"]["phone"]["failure"] == "target_busy"
    assert r.body["transfer"]["conflict"]["phone"] == "failed"
    assert r.body["transfer"]["unavailable"] is None and "transfer.open" in r.body["actions"]


async def test_two_live_calls_leave_the_binding_ambiguous_until_the_desktop_picks_one(
    bridge: RunningBridge, checker: Checker, admin: ApiClient, anon: ApiClient, acme: ApiClient
) -> None:
    """Call waiting: the agent holds the first call with the customer's number and answers a
    second one. The session lists both; the desktop names one with PATCH."""
    c, api = checker, acme
    await put_agent(c, api, "a-10", "1005")
    phone10 = "sip:1005@pbx.example"
    for call_id, state in (
        ("c-a", CallState.CONNECTED),
        ("c-b", CallState.RINGING),
        ("c-a", CallState.ON_HOLD),
        ("c-b", CallState.CONNECTED),
    ):
        await bridge.service.ingest(
            evidence(phone10, CallStateChanged(state), call_id, "+34900000012")
        )
    r = await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-12", "agent_id": "a-10", "customer": {"number": "+34900000012"}},
        expect=201,
    )
    call = r.body["call"]
    assert call["binding"] == "ambiguous" and call["sip_call_id"] is None
    assert call["candidates"] == [
        {"sip_call_id": "c-a", "state": "on_hold", "source": "hep"},
        {"sip_call_id": "c-b", "state": "connected", "source": "hep"},
    ]
    path = "/v1/sessions/s-12"
    pick = {"call": {"sip_call_id": "c-b"}}
    stale = {"If-Match": '"0"'}
    await c.call(api, "PATCH", path, pick, headers=stale, expect=412, code="version_mismatch")
    for bad_match in ('"x"', 'W/"1"', '"1", "2"', '"²"', ""):  # no version of ours: never met
        await c.call(
            api, "PATCH", path, pick, headers={"If-Match": bad_match}, expect=412, request_ok=None
        )
    bad_bodies: list[tuple[bytes, str]] = [
        (b"{}", "missing_field"),
        (b'{"call": {}}', "missing_field"),
        (b'{"call": {"sip_call_id": " "}}', "invalid_field"),
        (b'{"call": {"sip_call_id": "c-b", "state": "connected"}}', "unknown_field"),
        (b'{"call": "c-b"}', "invalid_field"),
        (b'{"result": 1}', "unknown_field"),
        (b"nope", "invalid_json"),
        (b"[]", "invalid_body"),
    ]
    for raw, code in bad_bodies:
        await c.call(
            api, "PATCH", path, raw=raw, headers=JSON, expect=400, code=code, request_ok=False
        )
    r = await c.call(
        api, "PATCH", path, pick, headers={"If-Match": f'"{r.body["version"]}"'}, expect=200
    )
    assert r.body["call"] | {"since": None} == {
        "state": "connected",
        "sip_call_id": "c-b",
        "since": None,
        "binding": "call_id",
        "candidates": [],
    }
    assert r.headers["ETag"] == f'"{r.body["version"]}"'
    again = await c.call(api, "PATCH", path, pick, expect=200)  # the same call: no change
    assert again.body["version"] == r.body["version"]
    # the picked call's transfer now reaches the session
    await steps(c, api, "s-12", "open", "internal", "next")
    await bridge.service.ingest(
        evidence(phone10, TransferSucceeded("target_leg_answered", "SIP/2.0 200 OK"), "c-b")
    )
    r = await c.call(api, "GET", path, expect=200)
    assert r.body["transfer"]["state"] == "transferred", r.body
    await c.call(
        api, "PATCH", path, {"call": {"sip_call_id": "c-a"}}, expect=409, code="already_transferred"
    )
    trail = (await c.call(api, "GET", path + "/audit", expect=200)).body["entries"]
    bindings = [(e["kind"], e["detail"]) for e in trail if e["event"] == "call_binding"]
    assert bindings == [
        (
            "system",
            {
                "binding": "ambiguous",
                "sip_call_id": None,
                "reason": "several_live_calls",
                "candidates": ["c-a", "c-b"],
            },
        ),
        (
            "desktop",
            {
                "binding": "call_id",
                "sip_call_id": "c-b",
                "reason": "desktop_choice",
                "candidates": ["c-a", "c-b"],
            },
        ),
    ]
    # a second session of the agent cannot take a call another open session has
    await c.call(api, "POST", path + "/end", {"result": "done"}, expect=200)
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {
            "id": "s-13",
            "agent_id": "a-10",
            "customer": {"number": "+34900000012"},
            "call": {"state": "connected", "sip_call_id": "c-a"},
        },
        expect=201,
    )
    await c.call(
        api,
        "POST",
        "/v1/sessions",
        {"id": "s-14", "agent_id": "a-10", "customer": {"number": "+34900000012"}},
        expect=201,
    )
    await c.call(
        api,
        "PATCH",
        "/v1/sessions/s-14",
        {"call": {"sip_call_id": "c-a"}},
        expect=409,
        code="call_in_use",
    )
    await c.call(api, "PATCH", path, pick, expect=409, code="invalid_step")  # s-12 has ended
    await c.call(api, "PATCH", "/v1/sessions/nope", pick, expect=404)
    await c.call(admin, "PATCH", path, pick, expect=403, code="forbidden")
    await c.call(anon, "PATCH", path, pick, expect=401, request_ok=False)
    await c.call(api, "PATCH", path, HUGE, expect=413, request_ok=False)
    assert_covers(c, COVERS["set_call"])
