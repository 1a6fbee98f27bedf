"""The dialog-state source (RFC 4235 SUBSCRIBE to Asterisk's hints) end to end.

pjsua2 phones transfer real calls through the real Asterisk 22; `transfer-bridge serve` watches
only the agents' lines (`[[sources.dialog]]`, as endpoint `watcher` with digest auth) and the
session is read through the API, as in test_asterisk_transfers.py. What the line states can
prove is asserted as proved; what they cannot (a blind transfer to a target that refuses at
once) is asserted as not proved: the desktop's manual confirmation decides it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import (
    AGENTS,
    Rig,
    audit,
    click,
    consult,
    customer_reaches_agent,
    failed,
    phone_sources,
    rules_after_transfer,
    session_until,
    still_free,
    tenant_with_agents,
    transferred,
)
from tests.rig.asterisk import RunningAsterisk
from tests.rig.phones import running_phones

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(90)]


@pytest.fixture
def hep() -> bool:
    return False


@pytest.fixture
async def rig(pbx: RunningAsterisk, tmp_path: Path, hep: bool) -> AsyncIterator[Rig]:
    async with (
        running_bridge_process(tmp_path, pbx, hep=hep, ami=False, dialog=True) as bridge,
        aiohttp.ClientSession() as http,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path / "phones") as phones,
    ):
        api = await tenant_with_agents(http, bridge, AGENTS)
        # the source subscribes to each agent's extension as the agents appear
        health = await bridge.wait_healthy(("pbx-dialog",))
        assert health["sources"]["pbx-dialog"]["subscribed"] == f"{len(AGENTS)}/{len(AGENTS)}"
        yield Rig(pbx, bridge, phones, api, http)


def expected_sources(hep: bool) -> set[str]:
    return {"pbx-dialog", "pbx-hep"} if hep else {"pbx-dialog"}


@pytest.mark.parametrize(
    "hep",
    [False, True],
    ids=["dialog_only", "dialog_and_hep"],
)
async def test_blind_transfer_answered(rig: Rig, hep: bool) -> None:
    phones = rig.phones
    await phones.behaviour("1002", "auto", delay_ms=300)
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-blind")
    await click(rig, "s-blind", "open", "internal", "next")
    await asyncio.sleep(1.0)
    await phones.blind_transfer("1001", agent_ref, "1002")
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] == 200, final
    s = await session_until(rig, "s-blind", transferred)
    t = s["transfer"]
    # the same outcome as HEP and AMI give (test_asterisk_transfers.py)
    assert t["kind"] == "blind" and t["target"] == "1002", t
    assert t["confirmed_by"] == "phone" and t["phone"]["refer"] == "succeeded", t
    assert t["phone"]["proved_by"] in expected_sources(hep), t
    entries = await audit(rig, "s-blind")
    assert phone_sources(entries) == expected_sources(hep), entries
    assert not [e for e in entries if e["event"] == "sources_disagree"], entries
    if not hep:
        reasons = {e["detail"].get("reason") for e in entries if e["event"] == "transfer_succeeded"}
        assert reasons == {"target_answered_customer"}, entries
    assert s["status"] == "call_transferred" and "transfer.confirm" not in s["actions"]
    await rules_after_transfer(rig, "s-blind", "ana")


async def test_attended_transfer(rig: Rig) -> None:
    phones = rig.phones
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-att")
    await click(rig, "s-att", "open", "internal")
    consult_ref = await consult(rig, "1001", agent_ref, "1002")
    s = await session_until(rig, "s-att", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    assert s["transfer"]["target"] == "1002", s
    # hold is not visible in Asterisk's dialog-info: the call stays "connected" here
    assert s["call"]["state"] == "connected", s
    await click(rig, "s-att", "next")
    await asyncio.sleep(0.5)
    await phones.attended_transfer("1001", agent_ref, consult_ref)
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] == 200, final
    s = await session_until(rig, "s-att", transferred)
    t = s["transfer"]
    assert t["kind"] == "attended" and t["target"] == "1002", t
    assert t["confirmed_by"] == "phone" and t["phone"]["proved_by"] == "pbx-dialog", t
    entries = await audit(rig, "s-att")
    reasons = {e["detail"].get("reason") for e in entries if e["event"] == "transfer_succeeded"}
    assert reasons == {"target_kept_consult_call"}, entries
    r = await rig.api.post("/v1/sessions/s-att/transfer", {"action": "confirm"})
    assert r.status == 200 and r.body["transfer"]["confirmed_by"] == "phone_and_agent", r.body
    await rules_after_transfer(rig, "s-att", "ana")


async def test_consult_abandoned_is_not_a_transfer(rig: Rig) -> None:
    phones = rig.phones
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-back")
    await click(rig, "s-back", "open", "internal")
    consult_ref = await consult(rig, "1001", agent_ref, "1002")
    await session_until(rig, "s-back", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    await phones.hangup("1001", consult_ref)
    await phones.unhold("1001", agent_ref)
    s = await session_until(rig, "s-back", lambda s: s["transfer"]["phone"]["consult"] == "ended")
    await asyncio.sleep(2.0)  # longer than the settle window: still no transfer
    s = (await rig.api.get("/v1/sessions/s-back")).body
    assert s["transfer"]["phone"]["refer"] == "none" and s["transfer"]["state"] == "dialing", s
    assert s["call"]["state"] == "connected", s
    await click(rig, "s-back", "dismiss")
    await still_free(rig, "s-back", "ana")


async def test_blind_transfer_to_a_busy_target_is_not_proved_either_way(rig: Rig) -> None:
    """HEP and AMI see the failure (NOTIFY 503, DialEnd BUSY); Asterisk's dialog-info shows only
    the agent's line going idle (the target's line never changes): no verdict, the agent's own
    answer decides, and nothing is used up when the agent says No."""
    phones = rig.phones
    await phones.behaviour("1002", "busy")
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-busy")
    await click(rig, "s-busy", "open", "internal", "next")
    await asyncio.sleep(1.0)
    await phones.blind_transfer("1001", agent_ref, "1002")
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] >= 300, final
    s = await session_until(rig, "s-busy", lambda s: s["call"]["state"] == "ended")
    await asyncio.sleep(1.0)
    s = (await rig.api.get("/v1/sessions/s-busy")).body
    assert not failed(s) and not transferred(s), s
    assert s["transfer"]["state"] == "confirming" and s["transfer"]["phone"]["refer"] == "none", s
    entries = await audit(rig, "s-busy")
    assert not [e for e in entries if e["event"].startswith("transfer_")], entries
    r = await rig.api.post("/v1/sessions/s-busy/transfer", {"action": "deny"})
    assert r.status == 200 and r.body["transfer"]["state"] == "none", r.body
    await still_free(rig, "s-busy", "ana")


@pytest.mark.parametrize("hep", [False, True], ids=["dialog_only", "dialog_and_hep"])
async def test_blind_transfer_declined_by_the_ringing_target_fails(rig: Rig, hep: bool) -> None:
    """The target's line rings with the customer's number, then the target declines (603):
    the dialog-state source sees the customer never reached the target, as HEP does (the
    NOTIFY's failure sipfrag), so the attempt fails and uses nothing up."""
    phones = rig.phones
    await phones.behaviour("1002", "manual")
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-decl")
    await click(rig, "s-decl", "open", "internal", "next")
    await asyncio.sleep(1.0)
    since = len(phones.events)
    await phones.blind_transfer("1001", agent_ref, "1002")
    ringing = await phones.wait_state("1002", "INCOMING", since=since)
    await asyncio.sleep(0.5)  # the target's line is seen ringing with the customer's number
    await phones.answer("1002", ringing["ref"], code=603)
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] >= 300, final
    s = await session_until(rig, "s-decl", failed)
    assert s["transfer"]["phone"]["refer"] == "failed" and s["transfer"]["kind"] == "blind", s
    entries = await audit(rig, "s-decl")
    failures = {e["detail"]["source"] for e in entries if e["event"] == "transfer_failed"}
    assert failures == expected_sources(hep), entries
    assert not [e for e in entries if e["event"] == "sources_disagree"], entries
    r = await rig.api.get("/v1/agents/ana")
    assert r.body["can_take_requests"] is True, r.body
