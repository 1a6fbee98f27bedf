"""Real transfers seen through HEP: SIPp phones transfer calls end to end through a real
Kamailio, whose siptrace module sends every message as HEPv3 to the bridge's own listener; each
case checks the session through the HTTP API, as the agent's desktop would see it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from desktop_api.testing import ApiClient, RunningBridge, running_bridge
from tests.rig.bridge_collector import HEP_KEY, BridgeAsCollector, settings_with_hep
from tests.rig.cases import AGENT, CUSTOMER, TARGET
from tests.rig.rig import missing_binaries, rig_required, run_case

pytestmark = pytest.mark.kamailio
ADMIN = "admin-secret"

if missing_binaries() and not rig_required():  # pragma: no cover - developer machines only
    pytest.skip(f"rig not installed: {missing_binaries()}", allow_module_level=True)


@pytest.fixture
async def hep_bridge(tmp_path: Path) -> AsyncIterator[RunningBridge]:
    settings = settings_with_hep(tmp_path, ADMIN)
    async with running_bridge(settings) as bridge:
        yield bridge


@pytest.fixture
async def desk(hep_bridge: RunningBridge) -> AsyncIterator[ApiClient]:
    """An account, the agent on phone 1001 and the target agent on 1002, via the API."""
    async with aiohttp.ClientSession() as http:
        admin = ApiClient(http, hep_bridge.url, ADMIN)
        r = await admin.post(
            "/v1/accounts", {"id": "acme", "name": "Acme", "transfer_enabled": True}
        )
        assert r.status == 201
        token = (await admin.post("/v1/accounts/acme/tokens")).body["token"]
        api = admin.with_token(token)
        for agent, ext in (("a-7", AGENT), ("a-8", TARGET)):
            r = await api.put(
                f"/v1/agents/{agent}",
                {"name": agent, "phone": {"sip_uri": f"sip:{ext}@pbx.example"}},
            )
            assert r.status == 201, r.body
        # The customer request reaches the desktop as the phone rings; the call binds by the
        # agent's phone and the customer's number once the phone shows it.
        r = await api.post(
            "/v1/sessions", {"id": "s-1", "agent_id": "a-7", "customer": {"number": CUSTOMER}}
        )
        assert r.status == 201, r.body
        yield api


async def play(bridge: RunningBridge, case: str, tmp_path: Path) -> None:
    await run_case(case, tmp_path / case, auth_key=HEP_KEY, collector=BridgeAsCollector(bridge))  # type: ignore[arg-type]
    await bridge.evidence.drain()


async def session(api: ApiClient) -> dict[str, Any]:
    r = await api.get("/v1/sessions/s-1")
    assert r.status == 200
    return r.body  # type: ignore[no-any-return]


async def audit_types(api: ApiClient) -> list[str]:
    entries = (await api.get("/v1/sessions/s-1/audit")).body["entries"]
    return [e["event"] for e in entries if e["kind"] == "phone"]


async def test_blind_transfer_answered(
    hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path
) -> None:
    await play(hep_bridge, "blind_success", tmp_path)
    s = await session(desk)
    assert s["call"]["binding"] == "phone_and_number"
    assert s["status"] == "call_transferred"
    t = s["transfer"]
    assert (t["state"], t["kind"], t["target"], t["confirmed_by"]) == (
        "transferred",
        "blind",
        TARGET,
        "phone",
    )
    assert t["phone"]["refer"] == "succeeded"
    assert t["phone"]["last_sipfrag"].startswith("SIP/2.0 200")
    assert s["actions"] == ["transfer.acknowledge", "end"]  # the questions are skipped
    # Rules 5 and 6 still hold: the agent is blocked, the one transfer is used.
    agent = (await desk.get("/v1/agents/a-7")).body
    assert agent["can_take_requests"] is False
    assert (await desk.step("s-1", "open")).body["error"]["code"] == "already_transferred"
    assert "transfer_succeeded" in await audit_types(desk)


async def test_blind_transfer_to_a_busy_target(
    hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path
) -> None:
    await play(hep_bridge, "blind_busy", tmp_path)
    s = await session(desk)
    t = s["transfer"]
    assert t["state"] == "failed"
    assert t["phone"]["refer"] == "failed"
    assert t["phone"]["last_sipfrag"].startswith("SIP/2.0 486")
    assert s["status"] == "active"
    assert (await desk.get("/v1/agents/a-7")).body["can_take_requests"] is True


async def test_attended_transfer(
    hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path
) -> None:
    await play(hep_bridge, "attended_success", tmp_path)
    s = await session(desk)
    t = s["transfer"]
    assert (t["state"], t["kind"], t["confirmed_by"]) == ("transferred", "attended", "phone")
    assert t["target"] == TARGET
    assert t["phone"]["refer"] == "succeeded"
    assert s["status"] == "call_transferred"
    types = await audit_types(desk)
    assert "consult" in types and "transfer_requested" in types


async def test_customer_hangs_up_during_the_consult(
    hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path
) -> None:
    await play(hep_bridge, "consult_customer_hangup", tmp_path)
    s = await session(desk)
    assert s["transfer"]["state"] == "failed"
    assert s["call"]["state"] == "ended"
    assert s["status"] == "active"
    entries = (await desk.get("/v1/sessions/s-1/audit")).body["entries"]
    failed = [e for e in entries if e["event"] == "transfer_failed"]
    assert failed and failed[0]["detail"]["reason"] == "customer_hung_up"


async def test_consult_abandoned_and_customer_resumed(
    hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path
) -> None:
    await play(hep_bridge, "consult_abandoned", tmp_path)
    s = await session(desk)
    assert s["transfer"]["state"] == "none"
    assert s["transfer"]["phone"]["consult"] == "ended"
    assert s["status"] == "active"
    calls = [
        e["detail"]["state"]
        for e in (await desk.get("/v1/sessions/s-1/audit")).body["entries"]
        if e["event"] == "call_state"
    ]
    # rang, answered, held for the consult, resumed after it, hung up at the end
    assert calls == ["ringing", "connected", "on_hold", "connected", "ended"]


async def test_refer_rejected(hep_bridge: RunningBridge, desk: ApiClient, tmp_path: Path) -> None:
    await play(hep_bridge, "refer_rejected", tmp_path)
    s = await session(desk)
    t = s["transfer"]
    assert t["state"] == "failed"
    assert t["phone"]["refer"] == "failed"
    assert s["status"] == "active"
    assert "transfer.open" not in s["actions"]  # the call has ended by the end of the case
