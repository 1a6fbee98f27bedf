"""Real phones transfer real calls through a real Asterisk 22; the session is read through the API.

pjsua2 softphones (customer 2000/2001, agents 1001/1003, target agent 1002) -> Asterisk (SIP
127.0.0.1:5070) -> HEPv3 (res_hep) and AMI -> `transfer-bridge serve` (a real process) -> HTTP.
Each test also walks the desktop's steps and checks the seed's rules: one transfer per session,
the agent blocked until the transferred session ends with a result.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.bridge_process import running_bridge_process
from tests.integration.desk import (
    Rig,
    audit,
    click,
    consult,
    customer_reaches_agent,
    failed,
    hang_up_everything,
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

REPORT_ENV = "TRANSFER_BRIDGE_E2E_REPORT"  # a file: each scenario's sessions as the API showed them
SOURCES = {"both": (True, True), "hep_only": (True, False), "ami_only": (False, True)}


@pytest.fixture
def sources() -> tuple[bool, bool]:
    return SOURCES["both"]


@pytest.fixture
async def rig(
    pbx: RunningAsterisk, tmp_path: Path, sources: tuple[bool, bool], request: pytest.FixtureRequest
) -> AsyncIterator[Rig]:
    hep, ami = sources
    async with (
        running_bridge_process(tmp_path, pbx, hep=hep, ami=ami) as bridge,
        aiohttp.ClientSession() as http,
        running_phones(pbx.phone_ports, pbx.sip, tmp_path / "phones") as phones,
    ):
        api = await tenant_with_agents(http, bridge)
        rig = Rig(pbx, bridge, phones, api, http)
        yield rig
        report = os.environ.get(REPORT_ENV)
        if report:  # a record of what the API showed, for people (issue notes, reviews)
            lines = [json.dumps({"test": request.node.name, "session": b}) for b in rig.seen]
            await asyncio.to_thread(append_lines, Path(report), lines)


def append_lines(path: Path, lines: list[str]) -> None:
    with path.open("a") as out:
        out.writelines(line + "\n" for line in lines)


# --- the scenarios ------------------------------------------------------------------------------


@pytest.mark.parametrize("sources", list(SOURCES.values()), ids=list(SOURCES))
async def test_blind_transfer_answered(rig: Rig, sources: tuple[bool, bool]) -> None:
    phones = rig.phones
    await phones.behaviour("1002", "auto", delay_ms=300)
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-blind")
    await click(rig, "s-blind", "open", "internal", "next")  # "dial on your phone", Next
    await asyncio.sleep(1.0)  # a person, not a script: Asterisk needs its bridge set up
    since = len(phones.events)
    await phones.blind_transfer("1001", agent_ref, "1002")
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] == 200, final
    await phones.wait_state("1002", "CONFIRMED", since=since)
    s = await session_until(rig, "s-blind", transferred)
    t = s["transfer"]
    assert t["kind"] == "blind" and t["target"] == "1002", t
    assert t["confirmed_by"] == "phone" and t["phone"]["refer"] == "succeeded", t
    hep, ami = sources
    expected = {name for name, on in (("pbx-hep", hep), ("pbx-ami", ami)) if on}
    assert t["phone"]["proved_by"] in expected
    entries = await audit(rig, "s-blind")
    assert phone_sources(entries) == expected  # either source alone is enough
    assert not [e for e in entries if e["event"] == "sources_disagree"]
    if hep:
        # The target's answer proves it; the PBX's NOTIFY 200 follows within milliseconds and
        # the view then shows it, whichever source proved the transfer first.
        s = await session_until(
            rig, "s-blind", lambda s: s["transfer"]["phone"]["last_sipfrag"] == "SIP/2.0 200 OK"
        )
        assert s["transfer"]["phone"]["proof"] == "target_answered"
    assert s["status"] == "call_transferred" and "transfer.confirm" not in s["actions"]
    await rules_after_transfer(rig, "s-blind", "ana")


async def test_blind_transfer_to_a_busy_target(rig: Rig) -> None:
    phones = rig.phones
    await phones.behaviour("1002", "busy")
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-busy")
    await click(rig, "s-busy", "open", "internal", "next")
    await asyncio.sleep(1.0)
    await phones.blind_transfer("1001", agent_ref, "1002")
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] >= 300, final
    s = await session_until(rig, "s-busy", failed)
    assert s["transfer"]["phone"]["refer"] == "failed", s
    assert s["transfer"]["phone"]["failure"] == "target_busy", s
    assert s["status"] == "active"
    # the agent's "Yes" now contradicts the phone: kept as a conflict, the phone wins
    r = await rig.api.post("/v1/sessions/s-busy/transfer", {"action": "confirm"})
    assert r.status in (200, 409), r.body
    await still_free(rig, "s-busy", "ana")


async def test_blind_transfer_declined_by_the_ringing_target(rig: Rig) -> None:
    """The target rings, then declines (603): HEP and AMI both show the failure."""
    phones = rig.phones
    await phones.behaviour("1002", "manual")
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-decl")
    await click(rig, "s-decl", "open", "internal", "next")
    await asyncio.sleep(1.0)
    since = len(phones.events)
    await phones.blind_transfer("1001", agent_ref, "1002")
    ringing = await phones.wait_state("1002", "INCOMING", since=since)
    await asyncio.sleep(0.5)
    await phones.answer("1002", ringing["ref"], code=603)
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] >= 300, final
    s = await session_until(rig, "s-decl", failed)
    assert s["transfer"]["phone"]["refer"] == "failed", s
    assert s["transfer"]["phone"]["failure"] == "target_rejected", s
    # Both sources report it, milliseconds apart (HEP sees the target's 603 itself, AMI the
    # channel's hangup cause 21): wait for the slower one.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        entries = await audit(rig, "s-decl")
        failures = {e["detail"]["source"] for e in entries if e["event"] == "transfer_failed"}
        if failures == {"pbx-hep", "pbx-ami"} or loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert failures == {"pbx-hep", "pbx-ami"}, entries
    assert not [e for e in entries if e["event"] == "sources_disagree"], entries
    r = await rig.api.get("/v1/agents/ana")
    assert r.body["can_take_requests"] is True, r.body


async def test_attended_transfer(rig: Rig) -> None:
    phones = rig.phones
    customer_ref, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-att")
    await click(rig, "s-att", "open", "internal")
    consult_ref = await consult(rig, "1001", agent_ref, "1002")
    s = await session_until(rig, "s-att", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    assert s["call"]["state"] == "on_hold", s
    await click(rig, "s-att", "next")
    await asyncio.sleep(0.5)
    await phones.attended_transfer("1001", agent_ref, consult_ref)
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] == 200, final
    s = await session_until(rig, "s-att", transferred)
    # what the customer notices: still on the same call, never cut off by the hand-over
    assert phones.state_of(customer_ref) == "CONFIRMED", phones.calls_of("2000")
    t = s["transfer"]
    assert t["kind"] == "attended" and t["target"] == "1002", t
    assert t["confirmed_by"] == "phone", t
    entries = await audit(rig, "s-att")
    assert phone_sources(entries) == {"pbx-hep", "pbx-ami"}
    assert not [e for e in entries if e["event"] == "sources_disagree"]
    # the agent clicks Yes after the phone proved it: agreement, not a conflict
    r = await rig.api.post("/v1/sessions/s-att/transfer", {"action": "confirm"})
    assert r.status == 200 and r.body["transfer"]["conflict"] is None, r.body
    assert r.body["transfer"]["confirmed_by"] == "phone_and_agent"
    await rules_after_transfer(rig, "s-att", "ana")


async def test_customer_hangs_up_during_the_consult(rig: Rig) -> None:
    phones = rig.phones
    customer_ref, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-hup")
    await click(rig, "s-hup", "open", "internal")
    await consult(rig, "1001", agent_ref, "1002")
    await session_until(rig, "s-hup", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    await phones.hangup("2000", customer_ref)
    s = await session_until(rig, "s-hup", lambda s: failed(s) and s["call"]["state"] == "ended")
    assert s["status"] == "active"
    entries = await audit(rig, "s-hup")
    reasons = {e["detail"].get("reason") for e in entries if e["event"] == "transfer_failed"}
    assert "customer_hung_up" in reasons, entries
    r = await rig.api.get("/v1/agents/ana")
    assert r.body["can_take_requests"] is True


async def test_consult_abandoned_and_the_customer_resumed(rig: Rig) -> None:
    phones = rig.phones
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-back")
    await click(rig, "s-back", "open", "internal")
    consult_ref = await consult(rig, "1001", agent_ref, "1002")
    await session_until(rig, "s-back", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    await phones.hangup("1001", consult_ref)
    await phones.unhold("1001", agent_ref)
    s = await session_until(
        rig,
        "s-back",
        lambda s: (
            s["transfer"]["phone"]["consult"] == "ended" and s["call"]["state"] == "connected"
        ),
    )
    assert s["transfer"]["phone"]["refer"] == "none", s
    assert s["transfer"]["state"] == "dialing", s  # the desktop's own step is untouched
    await click(rig, "s-back", "dismiss")  # the agent gives up the transfer on the desktop
    await still_free(rig, "s-back", "ana")


async def test_transfer_within_milliseconds_of_answering_is_refused(rig: Rig) -> None:
    """A script's REFER 1 ms after its ACK races Asterisk's bridge set-up: Asterisk usually
    refuses it (BlindTransfer Invalid on the AMI, NOTIFY 400 on the wire) but under load it
    sometimes wins. Each try is a new session; whichever way the wire went, the session says
    the same; a refused attempt is a failure that uses nothing up (the transfer stays
    available). Up to four tries to see a refusal."""
    phones = rig.phones
    await phones.behaviour("1002", "auto", delay_ms=200)
    refused = False
    for attempt in range(4):
        sid = f"s-race-{attempt}"
        since = len(phones.events)
        await phones.call("2000", "1001")
        ringing = await phones.wait_state("1001", "INCOMING", since=since)
        body = {"id": sid, "agent_id": "ana", "customer": {"number": "2000"}}
        r = await rig.api.post("/v1/sessions", body)
        assert r.status == 201, r.body
        await asyncio.sleep(0.3)  # ringing (answering at once wins the race more often)
        await phones.answer_then_transfer("1001", ringing["ref"], "1002")
        final = await phones.wait_xfer_final("1001", ringing["ref"])
        entries = await audit(rig, sid)
        if final["code"] >= 300:
            assert final["code"] == 400, final
            s = await session_until(rig, sid, failed)
            assert s["transfer"]["phone"]["refer"] == "failed" and s["status"] == "active", s
            entries = await audit(rig, sid)
            reasons = {
                e["detail"].get("reason") for e in entries if e["event"] == "transfer_failed"
            }
            assert reasons == {"pbx_blind_invalid", "notify_failure"}, entries
            assert not [e for e in entries if e["event"] == "sources_disagree"], entries
            await still_free(rig, sid, "ana")
            refused = True
            break
        # Asterisk won the race this time: the customer reached 1002, and the session says so.
        await session_until(rig, sid, transferred)
        assert not [e for e in entries if e["event"] == "sources_disagree"], entries
        await rules_after_transfer(rig, sid, "ana")
        await hang_up_everything(rig.phones, "2000", "1002", "1001")
        await asyncio.sleep(0.3)
    assert refused, "Asterisk accepted an instant REFER four times in a row"


async def test_two_agents_transfer_at_the_same_time(rig: Rig) -> None:
    phones = rig.phones
    await phones.behaviour("1002", "auto", delay_ms=300)
    _, ana_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-ana")
    _, cy_ref = await customer_reaches_agent(rig, "2001", "1003", "cy", "s-cy")
    await asyncio.sleep(1.0)
    await asyncio.gather(
        phones.blind_transfer("1001", ana_ref, "1002"),
        phones.blind_transfer("1003", cy_ref, "1002"),
    )
    ana = await session_until(rig, "s-ana", transferred)
    cy = await session_until(rig, "s-cy", transferred)
    assert ana["call"]["sip_call_id"] != cy["call"]["sip_call_id"]
    assert ana["customer"]["number"] == "2000" and cy["customer"]["number"] == "2001"
    for sid, agent in (("s-ana", "ana"), ("s-cy", "cy")):
        entries = await audit(rig, sid)
        assert not [e for e in entries if e["event"] == "sources_disagree"]
        # each session heard about its own call only
        r = await rig.api.get(f"/v1/sessions/{sid}")
        assert r.body["call"]["binding"] == "phone_and_number"
        await rules_after_transfer(rig, sid, agent)


@pytest.mark.parametrize("sources", list(SOURCES.values()), ids=list(SOURCES))
async def test_bridge_restarted_during_the_consult_then_the_transfer_completes(
    rig: Rig, sources: tuple[bool, bool]
) -> None:
    phones = rig.phones
    _, agent_ref = await customer_reaches_agent(rig, "2000", "1001", "ana", "s-restart")
    await click(rig, "s-restart", "open", "internal")
    consult_ref = await consult(rig, "1001", agent_ref, "1002")
    await session_until(rig, "s-restart", lambda s: s["transfer"]["phone"]["consult"] == "answered")
    assert await rig.bridge.stop() == 0
    hep, ami = sources
    await rig.bridge.start(sources=tuple(n for n, on in (("pbx-hep", hep), ("pbx-ami", ami)) if on))
    s = await session_until(rig, "s-restart", lambda s: True)
    assert s["transfer"]["state"] == "dialing" and s["transfer"]["phone"]["consult"] == "answered"
    await click(rig, "s-restart", "next")
    await phones.attended_transfer("1001", agent_ref, consult_ref)
    final = await phones.wait_xfer_final("1001", agent_ref)
    assert final["code"] == 200, final
    s = await session_until(rig, "s-restart", transferred)
    assert s["transfer"]["kind"] == "attended" and s["transfer"]["confirmed_by"] == "phone", s
    hep, ami = sources
    expected = {name for name, on in (("pbx-hep", hep), ("pbx-ami", ami)) if on}
    entries = await audit(rig, "s-restart")
    after_restart = [
        e for e in entries if e["kind"] == "phone" and e["event"].startswith("transfer")
    ]
    # every source configured understood the transfer of a call it first saw before the restart
    assert {e["detail"]["source"] for e in after_restart} == expected, entries
    await rules_after_transfer(rig, "s-restart", "ana")
